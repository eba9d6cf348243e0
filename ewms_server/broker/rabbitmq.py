"""RabbitMQ broker adapter: durable quorum queues and one broker user per workflow.

Per mqid (the queue name) the adapter makes, over AMQP with the admin credentials:

- quorum queue `<mqid>` (durable), with `x-delivery-limit`: a message returned more than that
  many times (failed task, pilot lost mid-task) is dead-lettered, never silently dropped, to
- quorum queue `<mqid>.dead-letter`, readable by the workflow's user;
- fanout exchange `<mqid>` bound to queue `<mqid>`. Producers publish to exchange `<mqid>`:
  publishing through the default exchange would need write permission on `amq.default`, which
  reaches every queue of the vhost, so the per-queue exchange is what keeps workflows apart.

Credentials, over the management HTTP API: user `ewms-<workflow_id>` with a random password (the
profiles' `auth_token`, never logged) and configure/write/read permissions on
`^(<mqid>|<mqid>|...)(\\.dead-letter)?$`, i.e. on that workflow's queues and exchanges only.
Deactivation deletes the user and closes its open connections.

`broker_address` format: an AMQP URL without password, `amqp[s]://<user>@<host>:<port>/<vhost>`
(vhost URL-quoted, `%2F` for `/`). A client builds its connection URL by inserting
`:<url-quoted auth_token>` after the user; see `ewms_pilot.broker.connection_url`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions
import requests

from .base import BrokerUnavailable, QueueAccess

LOGGER = logging.getLogger(__name__)

BROKER_TYPE = "rabbitmq"
DEAD_LETTER_SUFFIX = ".dead-letter"
USER_PREFIX = "ewms-"
CONNECTION_NAME = "ewms-server-broker-adapter"

SETTINGS_DOCS: tuple[tuple[str, str, str], ...] = (
    (
        "EWMS_BROKER_URL",
        "(required)",
        "AMQP URL with the admin credentials, e.g. amqp://admin:secret@mq.example.org:5672/%2F",
    ),
    (
        "EWMS_BROKER_MANAGEMENT_URL",
        "http://<host of EWMS_BROKER_URL>:15672",
        "RabbitMQ management HTTP API (users, permissions); same admin credentials",
    ),
    (
        "EWMS_BROKER_ADDRESS_FOR_PILOTS",
        "amqp://<host>:<port>/<vhost> of EWMS_BROKER_URL",
        "broker URL as pilots and users reach it (amqps:// for TLS); the workflow's user is added",
    ),
    (
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S",
        "86400",
        "seconds between a workflow's end and the deletion of its queues",
    ),
    (
        "EWMS_BROKER_TASK_DELIVERY_LIMIT",
        "3",
        "returns (failed task, lost pilot) after which a message goes to <mqid>.dead-letter",
    ),
    ("EWMS_BROKER_TIMEOUT_S", "10", "timeout of one broker call (AMQP connect, HTTP request)"),
)


@dataclass(frozen=True)
class RabbitMQSettings:
    """Where the broker is and how the adapter reaches it (admin side)."""

    broker_url: str
    management_url: str
    address_for_pilots: str
    queue_delete_grace_s: float
    task_delivery_limit: int
    timeout_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RabbitMQSettings:
        url = env.get("EWMS_BROKER_URL", "")
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError("EWMS_BROKER_URL must be an amqp:// or amqps:// URL with a host")
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        vhost_path = parts.path.lstrip("/") or "%2F"
        limit = int(env.get("EWMS_BROKER_TASK_DELIVERY_LIMIT", "3"))
        if limit < 0:
            raise ValueError("EWMS_BROKER_TASK_DELIVERY_LIMIT must be >= 0")
        return cls(
            broker_url=url,
            management_url=env.get("EWMS_BROKER_MANAGEMENT_URL") or f"http://{parts.hostname}:15672",
            address_for_pilots=env.get("EWMS_BROKER_ADDRESS_FOR_PILOTS")
            or f"{parts.scheme}://{parts.hostname}:{port}/{vhost_path}",
            queue_delete_grace_s=float(env.get("EWMS_BROKER_QUEUE_DELETE_GRACE_S", "86400")),
            task_delivery_limit=limit,
            timeout_s=float(env.get("EWMS_BROKER_TIMEOUT_S", "10")),
        )

    @property
    def vhost(self) -> str:
        return unquote(urlsplit(self.broker_url).path.lstrip("/")) or "/"

    @property
    def admin_auth(self) -> tuple[str, str]:
        parts = urlsplit(self.broker_url)
        return unquote(parts.username or "guest"), unquote(parts.password or "guest")

    def __repr__(self) -> str:  # the broker URL holds the admin password
        return f"RabbitMQSettings(management_url={self.management_url!r}, ...)"


class RabbitMQError(Exception):
    """A non-transient broker failure (bad admin credentials, refused request): a bug or config."""


def username_for(workflow_id: str) -> str:
    return f"{USER_PREFIX}{workflow_id}"


def dead_letter_queue(mqid: str) -> str:
    return f"{mqid}{DEAD_LETTER_SUFFIX}"


def permission_regex(mqids: list[str]) -> str:
    """Matches exactly the workflow's queue/exchange names and their dead-letter queues."""
    names = "|".join(re.escape(m) for m in sorted(mqids))
    return f"^({names})({re.escape(DEAD_LETTER_SUFFIX)})?$"


def pilot_address(address_for_pilots: str, user: str) -> str:
    parts = urlsplit(address_for_pilots)
    netloc = f"{quote(user, safe='')}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


_T = TypeVar("_T")

_TRANSIENT_AMQP = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


class RabbitMQBrokerAdapter:
    """Implements `BrokerAdapter`; every method is idempotent (safe to re-run after a crash)."""

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self._connection: pika.BlockingConnection | None = None
        self.connection_name = f"{CONNECTION_NAME} pid={os.getpid()} {secrets.token_hex(3)}"
        self._amqp_lock = asyncio.Lock()
        self._session = requests.Session()
        self._session.auth = settings.admin_auth

    # -- protocol -------------------------------------------------------------------------

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        await self._amqp(lambda ch: self._declare(ch, mqids))
        user = username_for(workflow_id)
        token = secrets.token_urlsafe(32)
        await self._http("PUT", f"/api/users/{quote(user, safe='')}", {"password": token, "tags": ""})
        regex = permission_regex(mqids)
        await self._http(
            "PUT",
            f"/api/permissions/{self._vhost_q}/{quote(user, safe='')}",
            {"configure": regex, "write": regex, "read": regex},
        )
        address = pilot_address(self.settings.address_for_pilots, user)
        LOGGER.info("activated %s: %d queue(s) for broker user %s", workflow_id, len(mqids), user)
        return {m: QueueAccess(m, token, BROKER_TYPE, address) for m in mqids}

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        user = quote(username_for(workflow_id), safe="")
        await self._http("DELETE", f"/api/users/{user}", missing_ok=True)
        # a deleted user's open connections would keep working: close them
        await self._http("DELETE", f"/api/connections/username/{user}", missing_ok=True)
        LOGGER.info("deactivated %s: broker user removed", workflow_id)

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        def delete(ch: Any) -> None:
            for m in mqids:
                ch.queue_delete(m)
                ch.queue_delete(dead_letter_queue(m))
                ch.exchange_delete(m)

        await self._amqp(delete)
        LOGGER.info("deleted %d queue(s) of %s", len(mqids), workflow_id)

    async def close(self) -> None:
        async with self._amqp_lock:
            conn, self._connection = self._connection, None
            if conn is not None:
                await asyncio.to_thread(_close_quietly, conn)
        self._session.close()

    # -- AMQP (admin) ---------------------------------------------------------------------

    def _declare(self, ch: Any, mqids: list[str]) -> None:
        for m in mqids:
            self._declare_queue(ch, dead_letter_queue(m), {"x-queue-type": "quorum"})
            self._declare_queue(
                ch,
                m,
                {
                    "x-queue-type": "quorum",
                    "x-delivery-limit": self.settings.task_delivery_limit,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": dead_letter_queue(m),
                },
            )
            ch.exchange_declare(m, exchange_type="fanout", durable=True)
            ch.queue_bind(m, m)

    def _declare_queue(self, ch: Any, name: str, arguments: dict[str, Any]) -> None:
        try:
            ch.queue_declare(name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as e:
            if e.reply_code != 406:
                raise
            # declared earlier with other arguments (settings changed): keep the existing queue
            LOGGER.warning("queue %s exists with other arguments; keeping it", name)
            ch.reopen()
            ch.queue_declare(name, passive=True)

    async def _amqp(self, work: Callable[[Any], _T]) -> _T:
        """Run `work(channel)` on the admin connection, off the loop; reconnect once if stale."""
        async with self._amqp_lock:
            return await asyncio.to_thread(self._amqp_sync, work)

    def _amqp_sync(self, work: Callable[[Any], _T]) -> _T:
        for attempt in (1, 2):
            fresh = self._connection is None
            try:
                if self._connection is None or not self._connection.is_open:
                    params = pika.URLParameters(self.settings.broker_url)
                    # heartbeats detect a dead broker during a call; between calls the idle
                    # connection may be dropped, which the retry below absorbs
                    params.heartbeat = 30
                    params.client_properties = {"connection_name": self.connection_name}
                    params.socket_timeout = params.blocked_connection_timeout = self.settings.timeout_s
                    params.connection_attempts = 1
                    self._connection = pika.BlockingConnection(params)
                proxy = _ChannelProxy(self._connection)
                try:
                    return work(proxy)
                finally:
                    if proxy.channel.is_open:
                        proxy.channel.close()
            except _TRANSIENT_AMQP as e:
                if self._connection is not None:
                    _close_quietly(self._connection)
                self._connection = None
                if fresh or attempt == 2:
                    raise BrokerUnavailable(f"RabbitMQ AMQP: {type(e).__name__}: {e}") from e
        raise AssertionError("unreachable")

    # -- management HTTP ------------------------------------------------------------------

    @property
    def _vhost_q(self) -> str:
        return quote(self.settings.vhost, safe="")

    async def _http(
        self, method: str, path: str, body: dict[str, Any] | None = None, missing_ok: bool = False
    ) -> None:
        url = self.settings.management_url.rstrip("/") + path
        try:
            resp = await asyncio.to_thread(
                self._session.request, method, url, json=body, timeout=self.settings.timeout_s
            )
        except requests.RequestException as e:
            raise BrokerUnavailable(
                f"RabbitMQ management {method} {path}: {type(e).__name__}"
            ) from None  # the exception may carry the request (and its password)
        if resp.status_code >= 500:
            raise BrokerUnavailable(f"RabbitMQ management {method} {path}: {resp.status_code}")
        if resp.status_code == 404 and missing_ok:
            return
        if resp.status_code >= 400:
            raise RabbitMQError(f"RabbitMQ management {method} {path}: {resp.status_code} {resp.text[:200]}")


class _ChannelProxy:
    """A channel that can be reopened after the broker closed it on a refused declaration."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self._connection = connection
        self.channel = connection.channel()

    def reopen(self) -> None:
        self.channel = self._connection.channel()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


def _close_quietly(conn: pika.BlockingConnection) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass
