"""The pilot's AMQP session: pika's asyncio adapter wrapped in awaitables (consume, confirm, ack).

Queue layout and addresses are made by `ewms_server.broker.rabbitmq`: each workflow has its own
vhost, so messages are published through the default exchange (routing key = queue name), as
oms-mqclient does; `broker_address` is `<user>@host:port/vhost` (or `amqp[s]://…`) and the auth
token is the password.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

LOGGER = logging.getLogger(__name__)


def _resolve(fut: asyncio.Future[Any], result: Any) -> None:
    """Complete a future from a pika callback, once (pika may call back after a failure)."""
    if not fut.done():
        fut.set_result(result)


class BrokerLost(Exception):
    """The connection dropped (broker restart, network): reconnecting may help."""


class BrokerRefused(Exception):
    """The broker refused us (bad or revoked credentials, missing queue): fatal for the pilot."""


def connection_url(broker_address: str, auth_token: str) -> str:
    """The AMQP URL to connect with, the token being the password:

    - `user@host:port/vhost` (oms-mqclient's form; the vhost taken as written) ->
      `amqp://user:token@host:port/<vhost url-quoted>`;
    - `amqp[s]://user@host:port/vhost` (vhost url-quoted, `%2F` for `/`) ->
      `amqp[s]://user:token@host:port/vhost`.
    """
    scheme_less = "://" not in broker_address
    parts = urlsplit(f"amqp://{broker_address}" if scheme_less else broker_address)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("amqp", "amqps") or not parts.username or not parts.hostname or port == -1:
        raise ValueError(
            "broker_address must look like <user>@<host>:<port>/<vhost> or amqp[s]://<user>@<host>:<port>/<vhost>"
        )
    netloc = f"{parts.username}:{quote(auth_token, safe='')}@{parts.hostname}"
    if port:
        netloc += f":{port}"
    path = parts.path
    if scheme_less:
        vhost = path[1:] if path.startswith("/") else path
        path = f"/{quote(vhost, safe='')}" if vhost else ""
    return parts._replace(netloc=netloc, path=path).geturl()


@dataclass
class Delivery:
    """One received message; acked/nacked through the session (and channel) that delivered it."""

    session: BrokerSession
    queue: str
    delivery_tag: int
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def delivery_count(self) -> int:
        """Previous returns of this message (quorum queues count them; 0 on first delivery)."""
        return int(self.headers.get("x-delivery-count", 0) or 0)


class BrokerSession:
    """One connection with a consuming channel and a publishing channel in confirm mode."""

    def __init__(self, url: str, *, connect_timeout: float = 10.0, heartbeat: int = 30) -> None:
        self._params = pika.URLParameters(url)
        self._params.socket_timeout = connect_timeout
        self._params.connection_attempts = 1
        self._params.heartbeat = heartbeat
        self._conn: AsyncioConnection | None = None
        self._consume_ch: Any = None
        self._publish_ch: Any = None
        self._confirms: dict[int, asyncio.Future[None]] = {}
        self._next_tag = 1
        self._consumer_tags: list[str] = []
        self._closing = False
        self._closed_hook: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self.failed: asyncio.Future[None] = loop.create_future()
        """Resolves with BrokerLost / BrokerRefused when the session breaks."""
        self.failed.add_done_callback(lambda f: f.exception())  # retrieved even if unawaited

    # -- life cycle -----------------------------------------------------------------------

    async def open(self, prefetch: int) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()

        def on_open_error(_c: Any, err: BaseException | str) -> None:
            if not opened.done():
                opened.set_exception(_classify_connect_error(err))

        self._conn = AsyncioConnection(
            self._params,
            on_open_callback=lambda _c: _resolve(opened, None),
            on_open_error_callback=on_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=loop,
        )
        await opened
        self._consume_ch = await self._open_channel()
        await self._wait(lambda cb: self._consume_ch.basic_qos(prefetch_count=prefetch, callback=cb))
        self._publish_ch = await self._open_channel()
        self._publish_ch.add_on_return_callback(self._on_return)
        await self._wait(
            lambda cb: self._publish_ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=cb)
        )

    async def close(self) -> None:
        self._closing = True
        if self._conn is not None and not (self._conn.is_closed or self._conn.is_closing):
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._closed_hook = closed
            self._conn.close()
            try:
                await asyncio.wait_for(closed, 5)
            except TimeoutError:
                LOGGER.warning("broker connection did not close in time")

    # -- consume / publish / settle ------------------------------------------------------

    async def consume(self, queue: str, on_message: Callable[[Delivery], None]) -> None:
        def deliver(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            on_message(Delivery(self, queue, method.delivery_tag, body, props.headers or {}))

        tag = await self._wait(
            lambda cb: self._consume_ch.basic_consume(queue, deliver, auto_ack=False, callback=cb)
        )
        self._consumer_tags.append(tag.method.consumer_tag)

    def _cancel(self, tag: str, cb: Callable[[Any], None]) -> Any:
        return self._consume_ch.basic_cancel(tag, callback=cb)

    async def cancel_consumers(self) -> None:
        """Stop deliveries; unsettled messages stay ours until acked/nacked or the close."""
        tags, self._consumer_tags = self._consumer_tags, []
        for tag in tags:
            if self.is_usable:
                await self._wait(functools.partial(self._cancel, tag))

    async def publish(self, queue: str, body: bytes, headers: dict[str, Any]) -> None:
        """Persistent publish to `queue` through the default exchange; returns once the broker
        confirmed it, raises if it did not or if no such queue took it (mandatory)."""
        if not self.is_usable:
            raise BrokerLost("publish on a broken session")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirms[self._next_tag] = fut
        self._next_tag += 1
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers=headers)
        self._publish_ch.basic_publish("", queue, body, props, mandatory=True)
        await self._race(fut)

    def ack(self, d: Delivery) -> bool:
        """False when the delivery's channel is gone (the broker requeued the message)."""
        if not self.is_usable:
            return False
        self._consume_ch.basic_ack(d.delivery_tag)
        return True

    def nack(self, d: Delivery, requeue: bool = True) -> bool:
        if not self.is_usable:
            return False
        self._consume_ch.basic_nack(d.delivery_tag, requeue=requeue)
        return True

    @property
    def is_usable(self) -> bool:
        return (
            not self.failed.done()
            and self._consume_ch is not None
            and self._consume_ch.is_open
            and self._publish_ch.is_open
        )

    # -- internals ------------------------------------------------------------------------

    async def _open_channel(self) -> Any:
        assert self._conn is not None
        ch = await self._wait(lambda cb: self._conn.channel(on_open_callback=cb))  # type: ignore
        ch.add_on_close_callback(self._on_channel_closed)
        ch.add_on_cancel_callback(self._on_cancelled)
        return ch

    async def _wait(self, start: Callable[[Callable[[Any], None]], Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        start(lambda result: _resolve(fut, result))
        return await self._race(fut)

    async def _race(self, fut: asyncio.Future[Any]) -> Any:
        done, _ = await asyncio.wait({fut, self.failed}, return_when=asyncio.FIRST_COMPLETED)
        if fut in done:
            return fut.result()
        fut.cancel()
        raise self.failed.exception()  # type: ignore[misc]

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = (
            [t for t in self._confirms if t <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for t in tags:
            fut = self._confirms.pop(t, None)
            if fut is not None and not fut.done():
                if nacked:
                    fut.set_exception(BrokerLost("broker nacked a published message"))
                else:
                    fut.set_result(None)

    def _on_return(self, _ch: Any, method: Any, _props: Any, _body: bytes) -> None:
        """An unroutable message comes back before its confirm: its queue is gone (deleted
        with the workflow), which no retry mends."""
        self._fail(BrokerRefused(f"no queue {method.routing_key!r} took a message: {method.reply_text}"))

    def _fail(self, exc: Exception) -> None:
        if not self.failed.done():
            self.failed.set_exception(exc)
        for fut in self._confirms.values():
            if not fut.done():
                fut.set_exception(exc)
        self._confirms.clear()

    def _on_channel_closed(self, _ch: Any, reason: Exception) -> None:
        if self._closing:
            return
        code = getattr(reason, "reply_code", 0)
        text = getattr(reason, "reply_text", str(reason))
        if code in (403, 404):  # 406 includes the broker's consumer_timeout: reconnect
            self._fail(BrokerRefused(f"channel closed by broker: {code} {text}"))
        else:
            self._fail(BrokerLost(f"channel closed: {code} {text}"))
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    def _on_cancelled(self, _frame: Any) -> None:
        self._fail(BrokerRefused("the broker cancelled our consumer (queue deleted?)"))

    def _on_connection_closed(self, _conn: Any, reason: Exception) -> None:
        if self._closed_hook is not None and not self._closed_hook.done():
            self._closed_hook.set_result(None)
        if self._closing:
            self._fail(BrokerLost("session closed"))
            return
        code = getattr(reason, "reply_code", 0)
        text = getattr(reason, "reply_text", str(reason))
        LOGGER.warning("broker connection closed: %s %s", code, text)
        self._fail(BrokerLost(f"connection closed: {code} {text}"))


def _classify_connect_error(err: BaseException | str) -> Exception:
    if isinstance(
        err,
        (
            pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.ProbableAccessDeniedError,
            pika.exceptions.AuthenticationError,
        ),
    ):
        return BrokerRefused(f"broker refused the credentials: {type(err).__name__}")
    if isinstance(err, pika.exceptions.ConnectionClosedByBroker) and err.reply_code == 403:
        return BrokerRefused(f"broker refused the credentials: {err.reply_text}")
    return BrokerLost(f"cannot connect to the broker: {type(err).__name__}: {err}")
