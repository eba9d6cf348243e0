"""RabbitMQ broker adapter: one vhost, one broker user and quorum queues per workflow.

The layout is the one EWMS's queue client (oms-mqclient) and published pilot use unchanged:
they declare each queue with only `x-queue-type: quorum` and publish through the default
exchange. So, per workflow, over the management HTTP API with the admin credentials:

- vhost `ewms-<workflow_id>`, holding this workflow's queues only: that is what keeps
  workflows apart, since write permission on the default exchange reaches every queue of a vhost;
- per mqid, quorum queue `<mqid>` and quorum queue `<mqid>.dead-letter`, both declared with only
  `x-queue-type`; the delivery limit and dead-lettering come from a policy named `<mqid>`
  matching `^<mqid>$` (`policy_definition`), so a message returned more than the limit (failed
  task, lost pilot) lands in `<mqid>.dead-letter`, never silently dropped;
- user `ewms-<workflow_id>` with a random password (the profiles' `auth_token`, never logged)
  and, in that vhost only, the permissions of `user_permissions`: configure and read its queues
  and their dead-letter queues, write to the default exchange.

Deactivation deletes the user and closes its connections; `delete_queues` deletes the vhost.

`broker_address` is `<user>@<host>:<port>/<vhost>` (what oms-mqclient parses), or with TLS
`amqps://<user>@<host>:<port>/<vhost>`; see `ewms_pilot.broker.connection_url`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pika
import requests

from . import dead_letters
from .base import BrokerUnavailable, QueueAccess, QueueDepth, QueuesMissing

LOGGER = logging.getLogger(__name__)

BROKER_TYPE = "rabbitmq"
DEAD_LETTER_SUFFIX = ".dead-letter"
USER_PREFIX = "ewms-"
VHOST_PREFIX = "ewms-"
QUORUM = {"x-queue-type": "quorum"}

SETTINGS_DOCS: tuple[tuple[str, str, str], ...] = (
    (
        "EWMS_BROKER_URL",
        "(required)",
        "AMQP URL with the admin credentials (a user tagged administrator: it makes vhosts, "
        "users and policies), e.g. amqp://admin:secret@mq.example.org:5672/",
    ),
    (
        "EWMS_BROKER_MANAGEMENT_URL",
        "http://<host of EWMS_BROKER_URL>:15672",
        "RabbitMQ management HTTP API (vhosts, queues, users, policies); same admin credentials",
    ),
    (
        "EWMS_BROKER_ADDRESS_FOR_PILOTS",
        "scheme, host and port of EWMS_BROKER_URL",
        "where pilots and users reach the broker: [amqp://]<host>:<port>, or amqps://<host>:<port> "
        "for TLS; the workflow's user and vhost are added",
    ),
    (
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S",
        "86400",
        "seconds between a workflow's end and the deletion of its queues (its vhost)",
    ),
    (
        "EWMS_BROKER_TASK_DELIVERY_LIMIT",
        "3",
        "returns (failed task, lost pilot) after which a message goes to <mqid>.dead-letter",
    ),
    ("EWMS_BROKER_TIMEOUT_S", "10", "timeout of one management API request"),
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
        limit = int(env.get("EWMS_BROKER_TASK_DELIVERY_LIMIT", "3"))
        if limit < 0:
            raise ValueError("EWMS_BROKER_TASK_DELIVERY_LIMIT must be >= 0")
        return cls(
            broker_url=url,
            management_url=env.get("EWMS_BROKER_MANAGEMENT_URL") or f"http://{parts.hostname}:15672",
            address_for_pilots=env.get("EWMS_BROKER_ADDRESS_FOR_PILOTS")
            or f"{parts.scheme}://{parts.hostname}:{port}",
            queue_delete_grace_s=float(env.get("EWMS_BROKER_QUEUE_DELETE_GRACE_S", "86400")),
            task_delivery_limit=limit,
            timeout_s=float(env.get("EWMS_BROKER_TIMEOUT_S", "10")),
        )

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


def vhost_for(workflow_id: str) -> str:
    """Workflow ids are `WF-<hex>-…`: the name needs no URL quoting (oms-mqclient quotes none)."""
    return f"{VHOST_PREFIX}{workflow_id}"


def dead_letter_queue(mqid: str) -> str:
    return f"{mqid}{DEAD_LETTER_SUFFIX}"


def user_permissions(mqids: list[str]) -> dict[str, str]:
    """Configure and read: the workflow's queues and their dead-letter queues (oms-mqclient
    declares every queue it reads, which needs configure); write: the default exchange only."""
    names = "|".join(re.escape(m) for m in sorted(mqids))
    own = f"^({names})({re.escape(DEAD_LETTER_SUFFIX)})?$"
    return {"configure": own, "write": "^amq\\.default$", "read": own}


def policy_definition(mqid: str, delivery_limit: int) -> dict[str, Any]:
    """Delivery limit and dead-lettering of queue `mqid`. At-least-once dead-lettering keeps a
    message until the dead-letter queue confirmed it (it needs `overflow: reject-publish`)."""
    return {
        "delivery-limit": delivery_limit,
        "dead-letter-exchange": "",
        "dead-letter-routing-key": dead_letter_queue(mqid),
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }


def pilot_address(address_for_pilots: str, user: str, vhost: str) -> str:
    """`user@host:port/vhost`, or `amqps://user@host:port/vhost` for TLS (oms-mqclient has no
    TLS: it fails on the scheme rather than talk in the clear)."""
    parts = urlsplit(address_for_pilots if "://" in address_for_pilots else f"//{address_for_pilots}")
    if parts.scheme not in ("", "amqp", "amqps") or not parts.hostname:
        raise ValueError("EWMS_BROKER_ADDRESS_FOR_PILOTS must look like [amqp[s]://]<host>[:<port>]")
    hostport = parts.hostname + (f":{parts.port}" if parts.port else "")
    address = f"{quote(user, safe='')}@{hostport}/{vhost}"
    return f"amqps://{address}" if parts.scheme == "amqps" else address


def leftover_paths(workflow_id: str) -> list[str]:
    """Management API paths (under /api) of everything the adapter makes for a workflow, for
    tests and demos that must clean up even when the server could not."""
    user = quote(username_for(workflow_id), safe="")
    return [f"/users/{user}", f"/connections/username/{user}", f"/vhosts/{vhost_for(workflow_id)}"]


class RabbitMQBrokerAdapter:
    """Implements `BrokerAdapter`; every method is idempotent (safe to re-run after a crash)."""

    def __init__(self, settings: RabbitMQSettings) -> None:
        self.settings = settings
        self._session = requests.Session()
        self._session.auth = settings.admin_auth
        pilot_address(settings.address_for_pilots, "u", "v")  # refuse a bad setting at start

    # -- protocol -------------------------------------------------------------------------

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        vhost = vhost_for(workflow_id)
        v = quote(vhost, safe="")
        user = username_for(workflow_id)
        u = quote(user, safe="")
        admin = quote(self.settings.admin_auth[0], safe="")
        await self._http("PUT", f"/api/vhosts/{v}", {"description": f"EWMS workflow {workflow_id}"})
        await self._http("PUT", f"/api/permissions/{v}/{admin}", _ALL)
        for m in mqids:
            # the policy first, so that the queue has its delivery limit from its creation
            policy = {
                "pattern": f"^{re.escape(m)}$",
                "apply-to": "queues",
                "priority": 0,
                "definition": policy_definition(m, self.settings.task_delivery_limit),
            }
            await self._http("PUT", f"/api/policies/{v}/{quote(m, safe='')}", policy)
            for q in (dead_letter_queue(m), m):
                await self._declare_queue(v, q)
        token = secrets.token_urlsafe(32)
        await self._http("PUT", f"/api/users/{u}", {"password": token, "tags": ""})
        await self._http("PUT", f"/api/permissions/{v}/{u}", user_permissions(mqids))
        address = pilot_address(self.settings.address_for_pilots, user, vhost)
        LOGGER.info(
            "activated %s: %d queue(s) in vhost %s for broker user %s", workflow_id, len(mqids), vhost, user
        )
        return {m: QueueAccess(m, token, BROKER_TYPE, address) for m in mqids}

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        user = quote(username_for(workflow_id), safe="")
        await self._http("DELETE", f"/api/users/{user}", missing_ok=True)
        # a deleted user's open connections would keep working: close them
        await self._close_connections_of(user)
        LOGGER.info("deactivated %s: broker user removed", workflow_id)

    async def _close_connections_of(self, user: str) -> None:
        """RabbitMQ answers 500 when one of the connections it is closing ends by itself
        meanwhile (`noproc` in its log): what counts is that none is left, so look, and close
        again what is."""
        path = f"/api/connections/username/{user}"
        for attempt in range(3):
            resp = await self._request("DELETE", path, None)
            if resp.status_code < 500:
                self._check("DELETE", path, resp, missing_ok=True)
                return
            left = await self._request("GET", path, None)
            if left.status_code == 404 or (left.status_code == 200 and left.json() == []):
                return
            if attempt == 2:
                self._check("DELETE", path, resp, missing_ok=True)  # BrokerUnavailable: retried later

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        """Deleting the vhost deletes its queues, policies and permissions at once."""
        await self._http("DELETE", f"/api/vhosts/{quote(vhost_for(workflow_id), safe='')}", missing_ok=True)
        LOGGER.info("deleted the vhost and %d queue(s) of %s", len(mqids), workflow_id)

    async def queue_depths(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueDepth]:
        """One management call lists every queue of the workflow's vhost (its statistics are
        the broker's, refreshed every `collect_statistics_interval`, 5 s by default)."""
        v = quote(vhost_for(workflow_id), safe="")
        path = f"/api/queues/{v}?columns=name,messages_ready,messages_unacknowledged"
        resp = await self._request("GET", path, None)
        if resp.status_code == 404:
            raise QueuesMissing(f"no vhost {vhost_for(workflow_id)} on the broker")
        self._check("GET", path, resp, missing_ok=False)
        by_name = {q.get("name"): q for q in resp.json()}

        def count(name: str, key: str) -> int | None:
            value = by_name.get(name, {}).get(key)
            return int(value) if isinstance(value, int) else None

        return {
            m: QueueDepth(
                pending=count(m, "messages_ready"),
                in_flight=count(m, "messages_unacknowledged"),
                dead_lettered=count(dead_letter_queue(m), "messages_ready"),
            )
            for m in mqids
        }

    async def requeue_dead_letters(self, workflow_id: str, mqids: list[str], limit: int) -> int:
        params = pika.URLParameters(self.settings.broker_url)
        params.virtual_host = vhost_for(workflow_id)
        params.connection_attempts = 1
        params.socket_timeout = params.blocked_connection_timeout = self.settings.timeout_s
        pairs = [(dead_letter_queue(m), m) for m in sorted(mqids)]
        moved = await asyncio.to_thread(dead_letters.requeue, params, pairs, limit)
        LOGGER.info("moved %d dead-lettered message(s) of %s back to their queues", moved, workflow_id)
        return moved

    async def publish(self, workflow_id: str, mqid: str, payload: bytes) -> None:
        """Through the management API's publish call (persistent, to the default exchange):
        one small message, so no AMQP connection is needed."""
        v = quote(vhost_for(workflow_id), safe="")
        path = f"/api/exchanges/{v}/amq.default/publish"
        body = {
            "properties": {"delivery_mode": 2},
            "routing_key": mqid,
            "payload": base64.b64encode(payload).decode(),
            "payload_encoding": "base64",
        }
        resp = await self._request("POST", path, body)
        if resp.status_code == 404:
            raise QueuesMissing(f"no vhost {vhost_for(workflow_id)} on the broker")
        self._check("POST", path, resp, missing_ok=False)
        if not resp.json().get("routed"):
            raise QueuesMissing(f"queue {mqid} is not on the broker")

    async def health(self) -> str | None:
        """The management API answers the admin login with the administrator tag, and the
        AMQP port accepts connections (pilots and users publish there)."""
        url = self.settings.management_url.rstrip("/")
        try:
            resp = await self._request("GET", "/api/whoami", None)
        except BrokerUnavailable:
            return f"RabbitMQ management API unreachable at {url}"
        if resp.status_code == 401:
            return f"RabbitMQ management API at {url} refused the admin login of EWMS_BROKER_URL (401)"
        if resp.status_code != 200:
            return f"RabbitMQ management API at {url} answered {resp.status_code} to GET /api/whoami"
        try:
            tags = resp.json().get("tags", "")
        except ValueError:
            return f"RabbitMQ management API at {url} answered GET /api/whoami with no JSON"
        if "administrator" not in (tags if isinstance(tags, list) else str(tags).split(",")):
            return "the admin user of EWMS_BROKER_URL is not tagged administrator on RabbitMQ"
        parts = urlsplit(self.settings.broker_url)
        host, port = parts.hostname or "", parts.port or (5671 if parts.scheme == "amqps" else 5672)
        try:
            await asyncio.to_thread(_connect, host, port, self.settings.timeout_s)
        except OSError as e:
            return f"RabbitMQ AMQP port {host}:{port} unreachable ({e.strerror or type(e).__name__})"
        return None

    async def close(self) -> None:
        self._session.close()

    # -- management HTTP ------------------------------------------------------------------

    async def _declare_queue(self, v: str, name: str) -> None:
        body = {"durable": True, "auto_delete": False, "arguments": QUORUM}
        resp = await self._request("PUT", f"/api/queues/{v}/{quote(name, safe='')}", body)
        if resp.status_code == 400 and "inequivalent" in resp.text:
            # re-declared by the workflow's user with other arguments: keep the queue (and
            # its messages); the policy still applies
            LOGGER.warning("queue %s exists with other arguments; keeping it", name)
            return
        self._check("PUT", f"/api/queues/{v}/{name}", resp, missing_ok=False)

    async def _http(
        self, method: str, path: str, body: dict[str, Any] | None = None, missing_ok: bool = False
    ) -> None:
        self._check(method, path, await self._request(method, path, body), missing_ok)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> requests.Response:
        url = self.settings.management_url.rstrip("/") + path
        try:
            return await asyncio.to_thread(
                self._session.request, method, url, json=body, timeout=self.settings.timeout_s
            )
        except requests.RequestException as e:
            raise BrokerUnavailable(
                f"RabbitMQ management {method} {path}: {type(e).__name__}"
            ) from None  # the exception may carry the request (and its password)

    @staticmethod
    def _check(method: str, path: str, resp: requests.Response, missing_ok: bool) -> None:
        if resp.status_code >= 500:
            raise BrokerUnavailable(f"RabbitMQ management {method} {path}: {resp.status_code}")
        if resp.status_code == 404 and missing_ok:
            return
        if resp.status_code >= 400:
            raise RabbitMQError(f"RabbitMQ management {method} {path}: {resp.status_code} {resp.text[:200]}")


def _connect(host: str, port: int, timeout: float) -> None:
    socket.create_connection((host, port), timeout=timeout).close()


_ALL = {"configure": ".*", "write": ".*", "read": ".*"}
