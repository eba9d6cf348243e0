"""The HTTP server around the application: forwarded client addresses from trusted proxies
only, and a cap on connections sitting idle before a request."""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any

import tornado.httpserver
from tornado import httputil

from ..config import IPNetwork

LOGGER = logging.getLogger("ewms_server.connections")


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(address: str, proxies: Sequence[IPNetwork]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in proxies)


def forwarded_client(headers: httputil.HTTPHeaders, peer: str, proxies: Sequence[IPNetwork]) -> str:
    """The client's address as a trusted proxy `peer` reports it: X-Forwarded-For read from the
    right, skipping trusted proxies, else X-Real-Ip, else the peer itself. A malformed address
    makes the header count for nothing."""
    chain = [a.strip() for a in headers.get("X-Forwarded-For", "").split(",") if a.strip()]
    if chain:
        if any(_ip(a) is None for a in chain):
            return peer
        return next((a for a in reversed(chain) if not is_trusted(a, proxies)), chain[0])
    real = headers.get("X-Real-Ip", "").strip()
    return real if _ip(real) is not None else peer


class HTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer (xheaders off) plus `trusted_proxies` and `max_idle_connections`.

    A connection is idle from when it opens, or finishes a request, until the headers of its
    next request are in; past the cap the longest-idle one is closed."""

    def initialize(
        self,
        *args: Any,
        trusted_proxies: Sequence[IPNetwork] = (),
        max_idle_connections: int = 512,
        **kwargs: Any,
    ) -> None:
        super().initialize(*args, **{**kwargs, "xheaders": False})
        self.trusted_proxies = tuple(trusted_proxies)
        self.max_idle_connections = max_idle_connections
        self._idle: OrderedDict[Any, None] = OrderedDict()

    def start_request(
        self, server_conn: Any, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        self._idle[server_conn] = None
        self._idle.move_to_end(server_conn)
        while len(self._idle) > self.max_idle_connections:
            oldest, _ = self._idle.popitem(last=False)
            LOGGER.info("over %d idle connections: closing the longest idle", self.max_idle_connections)
            oldest.stream.close()
        delegate = super().start_request(server_conn, request_conn)
        return _Request(delegate, request_conn, self, server_conn)

    def busy(self, server_conn: Any) -> None:
        self._idle.pop(server_conn, None)

    def on_close(self, server_conn: Any) -> None:
        self._idle.pop(server_conn, None)
        super().on_close(server_conn)


class _Request(httputil.HTTPMessageDelegate):
    """One request: marks its connection busy, and names the forwarded client when the peer
    is a trusted proxy (the connection's own address is restored after the request)."""

    def __init__(
        self,
        inner: httputil.HTTPMessageDelegate,
        request_conn: httputil.HTTPConnection,
        server: HTTPServer,
        server_conn: Any,
    ) -> None:
        self._inner = inner
        self._context = getattr(request_conn, "context", None)
        self._server = server
        self._server_conn = server_conn
        self._peer: str | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self._server.busy(self._server_conn)
        peer = getattr(self._context, "remote_ip", None)
        if isinstance(peer, str) and is_trusted(peer, self._server.trusted_proxies):
            self._peer = peer
            self._context.remote_ip = forwarded_client(headers, peer, self._server.trusted_proxies)  # type: ignore[union-attr]
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._restore()
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._restore()
        self._inner.on_connection_close()

    def _restore(self) -> None:
        if self._peer is not None:
            self._context.remote_ip = self._peer  # type: ignore[union-attr]
            self._peer = None
