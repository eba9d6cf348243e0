"""A webhook receiver for tests: a tornado server on 127.0.0.1 that records every request
and answers what its plan says (e.g. 503 twice per delivery, then 200)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web


@dataclass(frozen=True)
class Hit:
    path: str
    query: str
    delivery_id: str
    event: str
    signature: str
    body: bytes
    status: int
    """what the receiver answered"""


Plan = Callable[[str, int], int]
"""(delivery id, attempt number from 1) -> the status to answer"""


def fail_first(n: int, status: int = 503) -> Plan:
    return lambda _did, attempt: status if attempt <= n else 200


def signed_by(secret: str, hit: Hit) -> bool:
    want = "sha256=" + hmac.new(secret.encode(), hit.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, hit.signature)


@dataclass
class Receiver:
    plan: Plan = field(default=lambda _did, _n: 200)
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    delay_s: float = 0.0
    """how long each answer takes (a slow receiver widens the window of a double send)"""
    _server: Any = None

    def start(self) -> Receiver:
        receiver = self

        class Hook(tornado.web.RequestHandler):
            async def post(self) -> None:
                did = self.request.headers.get("X-EWMS-Delivery", "")
                attempt = 1 + sum(1 for h in receiver.hits if h.delivery_id == did)
                status = receiver.plan(did, attempt)
                receiver.hits.append(
                    Hit(
                        path=self.request.path,
                        query=self.request.query,
                        delivery_id=did,
                        event=self.request.headers.get("X-EWMS-Event", ""),
                        signature=self.request.headers.get("X-EWMS-Signature", ""),
                        body=self.request.body,
                        status=status,
                    )
                )
                if receiver.delay_s:
                    await asyncio.sleep(receiver.delay_s)
                self.set_status(status)
                if 300 <= status < 400:
                    self.set_header("Location", "/elsewhere")
                self.finish()

        app = tornado.web.Application(
            [(r"/.*", Hook)], log_function=lambda _h: None
        )  # quiet: tests read the server's logs
        sockets = tornado.netutil.bind_sockets(self.port, "127.0.0.1", family=socket.AF_INET)
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def url(self, path: str = "/hook?key=receiver-credential") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self) -> list[Hit]:
        return [h for h in self.hits if 200 <= h.status < 300]

    def events(self) -> list[str]:
        return [h.event for h in self.delivered()]
