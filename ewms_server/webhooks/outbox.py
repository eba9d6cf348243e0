"""The webhook outbox: each event of a workflow with a `notify_url` becomes one stored row,
written right after the state change that caused it and keyed by the event (once per workflow,
or per taskforce), so repeating the change (a retried request, a replica, a restart) writes no
second row; the delivery loop (loops/webhooks.py) sends the rows at least once.

The notifier only reads and inserts: which state changes are events is decided where they
happen (queue activation, deactivation, the TMS's reports), which call it."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, TypedDict

import orjson

from ..ids import new_id
from ..storage.base import Change, DuplicateKey, Storage

LOGGER = logging.getLogger("ewms_server.webhooks")
CHUNK = 1000
"""Most ids in one $in filter."""
REMEMBERED = 100_000
"""Event keys (and taskforces) this process remembers as done, so a report repeated every few
seconds costs no store read."""


class Event(StrEnum):
    QUEUES_ACTIVATED = "queues-activated"
    """The workflow's queues and credentials exist; its taskforces go to launch."""
    FIRST_WORKER_RUNNING = "first-worker-running"
    """A TMS reported the workflow's first running pilot job."""
    INPUT_CONSUMED = "input-consumed"
    """Tasks have run and the tasks' input queues hold nothing ready or in flight."""
    WORKFLOW_FINISHED = "workflow-finished"
    WORKFLOW_ABORTED = "workflow-aborted"
    TASKFORCE_HELD = "taskforce-held"
    """A TMS reported held jobs of a taskforce (once per taskforce)."""
    TASKFORCE_SUBMIT_FAILED = "taskforce-submit-failed"
    """A taskforce used up its submit attempts (phase submit-failed)."""


class Status(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(TypedDict):
    delivery_id: str
    workflow_id: str
    owner: str
    event: str
    event_key: str
    url: str
    body: str
    status: str
    attempts: int
    created_ts: float
    next_attempt_ts: float
    lease_until: float
    delivered_ts: float | None
    last_status: int | None
    last_error: str | None


def event_key(workflow_id: str, event: Event, subject: str = "") -> str:
    return f"{workflow_id}:{event}" + (f":{subject}" if subject else "")


def delivery(
    *, workflow_id: str, owner: str, url: str, event: Event, subject: str, details: Mapping[str, Any]
) -> WebhookDelivery:
    """One outbox row; its body is fixed here, so every attempt sends (and signs) the same bytes."""
    now = time.time()
    did = new_id("WH")
    body = {**details, "delivery_id": did, "event": str(event), "workflow_id": workflow_id, "ts": now}
    return WebhookDelivery(
        delivery_id=did,
        workflow_id=workflow_id,
        owner=owner,
        event=str(event),
        event_key=event_key(workflow_id, event, subject),
        url=url,
        body=orjson.dumps(body).decode(),
        status=str(Status.PENDING),
        attempts=0,
        created_ts=now,
        next_attempt_ts=now,
        lease_until=0.0,
        delivered_ts=None,
        last_status=None,
        last_error=None,
    )


class _Remembered:
    """A bounded set (oldest forgotten first)."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


class Notifier:
    """Writes outbox rows for workflows that have a notify_url, and wakes the delivery loop."""

    def __init__(self, store: Storage, wake: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.wake = wake
        self._done = _Remembered()
        """event keys written (or found) already, and `<uuid>:quiet` for taskforces of
        workflows without a notify_url (which never gains one)"""

    async def emit(
        self,
        workflow_id: str,
        event: Event,
        *,
        subject: str = "",
        details: Mapping[str, Any] | None = None,
        workflow: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write the event's row unless the workflow has no notify_url or the row exists;
        True when it was written now."""
        key = event_key(workflow_id, event, subject)
        if key in self._done:
            return False
        wf = workflow or await self.store.get(
            "workflows", {"workflow_id": workflow_id}, projection=["workflow_id", "owner", "notify_url"]
        )
        if wf is None or not wf.get("notify_url"):
            return False
        for _ in range(2):  # a second try only for the rare collision of a new delivery id
            row = delivery(
                workflow_id=workflow_id,
                owner=wf["owner"],
                url=wf["notify_url"],
                event=event,
                subject=subject,
                details=details or {},
            )
            try:
                await self.store.insert("webhook_outbox", [row])
            except DuplicateKey:
                if await self.store.get("webhook_outbox", {"event_key": key}, projection=["delivery_id"]):
                    self._done.add(key)
                    return False
                continue
            self._done.add(key)
            LOGGER.info("webhook %s: %s of %s queued", row["delivery_id"], event, workflow_id)
            self.wake()
            return True
        raise RuntimeError(f"could not write the {event} event of {workflow_id}")

    async def workflow_ended(self, workflow_id: str, kind: str) -> None:
        """After a deactivation (every call: a retried abort writes what a crash left out)."""
        event = Event.WORKFLOW_ABORTED if kind == "ABORTED" else Event.WORKFLOW_FINISHED
        if event_key(workflow_id, event) in self._done:
            return
        wf = await self.store.get(
            "workflows",
            {"workflow_id": workflow_id},
            projection=["workflow_id", "owner", "notify_url", "notify_watch"],
        )
        if wf is None or not wf.get("notify_url"):
            return  # no store write for the many workflows without webhooks
        await self.emit(workflow_id, event, details={"deactivated": kind}, workflow=wf)
        if wf["notify_watch"]:
            await self.store.transition(
                "workflows", {"workflow_id": workflow_id}, Change(set={"notify_watch": False})
            )

    async def submit_failed(self, uuid: str, n_failed_submits: int, error: str) -> None:
        tf = await self.store.get(
            "taskforces", {"taskforce_uuid": uuid}, projection=["workflow_id", "task_id"]
        )
        if tf is not None:
            details = {
                "taskforce_uuid": uuid,
                "task_id": tf["task_id"],
                "n_failed_submits": n_failed_submits,
                "error": error[:1000],
            }
            await self.emit(tf["workflow_id"], Event.TASKFORCE_SUBMIT_FAILED, subject=uuid, details=details)

    async def statuses_reported(
        self, compound_statuses: Mapping[str, Mapping[str, Mapping[str, int]]]
    ) -> None:
        """After a TMS statuses report was stored: a taskforce's first RUNNING job is its
        workflow's first running worker (then its input is watched); a `HELD…` status key is a
        held taskforce."""
        running: dict[str, int] = {}
        held: dict[str, dict[str, int]] = {}
        for uuid, by_status in compound_statuses.items():
            if f"{uuid}:quiet" in self._done:
                continue
            n_running = sum(int(n) for n in (by_status.get("RUNNING") or {}).values())
            if n_running and f"{uuid}:running" not in self._done:
                running[uuid] = n_running
            reasons = {
                k: sum(int(n) for n in v.values())
                for k, v in by_status.items()
                if k.upper().startswith("HELD")
            }
            if any(reasons.values()) and f"{uuid}:held" not in self._done:
                held[uuid] = {k: n for k, n in reasons.items() if n}
        if not running and not held:
            return
        tfs, wfs = await self._owners([*running, *held])
        first: dict[str, str] = {}  # workflow id -> its first running taskforce in this report
        for uuid in running:
            if uuid in tfs:
                first.setdefault(tfs[uuid], uuid)
                self._done.add(f"{uuid}:running")
        for wid, uuid in first.items():
            wf = wfs.get(wid)
            if wf is None or wf["deactivated"] is not None:  # no URL, or no news once ended
                continue
            details = {"taskforce_uuid": uuid, "n_running": running[uuid]}
            await self.emit(wid, Event.FIRST_WORKER_RUNNING, details=details, workflow=wf)
            await self.store.transition(
                "workflows",
                {"workflow_id": wid, "deactivated": None, "notify_watch": False},
                Change(set={"notify_watch": True}),
            )
        for uuid, reasons in held.items():
            of = tfs.get(uuid)
            if of is None:
                continue
            if of in wfs:
                details = {"taskforce_uuid": uuid, "n_held": sum(reasons.values()), "held": reasons}
                await self.emit(of, Event.TASKFORCE_HELD, subject=uuid, details=details, workflow=wfs[of])
            self._done.add(f"{uuid}:held")

    async def _owners(self, uuids: list[str]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
        """{uuid: workflow id} of these taskforces, and {workflow id: workflow} of those with a
        notify_url; taskforces of the others are remembered as quiet."""
        tfs: dict[str, str] = {}
        for part in _chunks(list(dict.fromkeys(uuids))):
            for d in await self.store.find(
                "taskforces", {"taskforce_uuid": {"$in": part}}, projection=["taskforce_uuid", "workflow_id"]
            ):
                tfs[d["taskforce_uuid"]] = d["workflow_id"]
        wfs: dict[str, dict[str, Any]] = {}
        for part in _chunks(list(dict.fromkeys(tfs.values()))):
            for d in await self.store.find(
                "workflows",
                {"workflow_id": {"$in": part}},
                projection=["workflow_id", "owner", "notify_url", "deactivated"],
            ):
                if d.get("notify_url"):
                    wfs[d["workflow_id"]] = d
        for uuid, wid in tfs.items():
            if wid not in wfs:
                self._done.add(f"{uuid}:quiet")
        return tfs, wfs
