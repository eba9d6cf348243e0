"""Request bodies read only once the headers admit the request, and refusals that reach the
client before the connection closes.

Tornado reads a streamed handler's body only after `prepare()` has returned. Here `prepare()`
runs `admit()`, which decides from the request line and headers alone (so an unauthenticated
or oversized upload costs no memory). A refusal is answered at once; whatever body the client
still sends is then read and dropped as it arrives, for at most LINGER_S seconds and
LINGER_BYTES, before the connection closes: closing a socket with unread input resets it,
and a client still sending would lose the answer. An admitted body is collected up to the
route's limit; past it (a chunked body declares no length) comes the same refusal, a 413.
A handler's `get()`/`post()` never runs for a refused request.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web
from tornado.iostream import StreamClosedError

from ..errors import EWMSError, TooLarge

LINGER_S = 2.0
LINGER_BYTES = 8 * 1024 * 1024


def _unless_refused(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(method)
    async def run(self: StreamedBodyHandler, *args: Any, **kwargs: Any) -> None:
        if not self.refused:
            await method(self, *args, **kwargs)

    return run


@tornado.web.stream_request_body
class StreamedBodyHandler(tornado.web.RequestHandler):
    refused = False
    """Answered by prepare() or by the body limit; the route's method does not run."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for verb in ("get", "post", "put", "patch", "delete"):
            if verb in cls.__dict__:
                setattr(cls, verb, _unless_refused(cls.__dict__[verb]))

    def start_body(self, limit: int) -> None:
        """Called from initialize(): the largest body this request may have."""
        self._raw = bytearray()
        self._limit = limit
        self._dropped = 0
        self._linger: asyncio.TimerHandle | None = None
        self._done = False

    @property
    def raw_body(self) -> bytearray:
        return self._raw

    async def admit(self) -> None:
        """Raise an EWMSError or tornado HTTPError to refuse the request (headers only)."""

    def error_response(self, status_code: int, exc: BaseException | None) -> bytes:
        """Set an error response's status and headers; return its body."""
        raise NotImplementedError

    def on_answered(self) -> None:
        """The answer is complete (a refusal's comes before the request ends)."""

    async def prepare(self) -> None:
        try:
            await self.admit()
        except (EWMSError, tornado.web.HTTPError) as e:
            self.log_exception(type(e), e, e.__traceback__)
            await self._refuse(e)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused:
            self._dropped += len(chunk)
            if self._dropped > LINGER_BYTES:
                self._end_refusal()
            return None
        if len(self._raw) + len(chunk) > self._limit:
            return self._refuse(TooLarge(f"request body is larger than {self._limit} bytes"))
        self._raw += chunk
        return None

    def _has_body(self) -> bool:
        headers = self.request.headers
        return headers.get("Content-Length", "0").strip() != "0" or "Transfer-Encoding" in headers

    async def _refuse(self, error: Exception) -> None:
        self.refused = True
        status = error.status_code if isinstance(error, tornado.web.HTTPError) else 500
        payload = self.error_response(status, error)
        if self._has_body():  # its body is dropped: this connection carries no further request
            self.set_header("Connection", "close")
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self._end_refusal)
        self.set_header("Content-Length", str(len(payload)))
        self.write(payload)
        self.on_answered()
        try:
            await self.flush()  # the whole answer is on its way; tornado finishes it after the body
        except StreamClosedError:
            self._end_refusal()

    def _end_refusal(self) -> None:
        if not self._done:
            self.finish()  # the body is not read to its end: tornado closes the connection

    def on_finish(self) -> None:
        self.on_answered()
        self._done = True
        if self._linger is not None:
            self._linger.cancel()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.refused and not self._done:
            self._end_refusal()
