"""Progress answers per workflow, reused for EWMS_PROGRESS_CACHE_S: the broker is asked at most
once per workflow in that time, however many clients poll, and concurrent requests for the
same workflow share one computation (one store read, one broker call)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .broker.base import BrokerAdapter, BrokerUnavailable, QueueDepth, QueuesMissing
from .caller import Caller
from .errors import NotFound
from .ops import progress
from .ops.progress import TaskBacklog
from .storage.base import Storage

LOGGER = logging.getLogger("ewms_server.progress")


@dataclass(frozen=True)
class Entry:
    owner: str
    body: dict[str, Any]
    backlogs: dict[str, TaskBacklog]
    made: float
    """monotonic time it was computed"""


class ProgressCache:
    """One per server process (replicas each keep their own)."""

    def __init__(
        self,
        store: Storage,
        broker: BrokerAdapter,
        *,
        ttl_s: float,
        window_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.broker = broker
        self.ttl_s = ttl_s
        self.window_s = window_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Entry | None]] = {}
        self.n_computed = 0
        """How many times a workflow's progress was computed (tests, benchmarks)."""

    def forget(self, workflow_id: str) -> None:
        """Drop a cached answer that an action just made stale."""
        self._entries.pop(workflow_id, None)

    async def progress(self, workflow_id: str, caller: Caller) -> dict[str, Any]:
        """The progress answer for `caller` (another user's workflow is a 404, like a missing one)."""
        entry = self._fresh(workflow_id)
        if entry is None:
            scope = caller.scope()
            if scope and not await self.store.get(
                "workflows", {"workflow_id": workflow_id, **scope}, projection=["workflow_id"]
            ):
                raise NotFound(f"no workflow {workflow_id}")
            entry = await self._entry(workflow_id)
        if entry is None or caller.scope().get("owner", entry.owner) != entry.owner:
            raise NotFound(f"no workflow {workflow_id}")
        return entry.body

    async def figures(self, workflow_id: str) -> dict[str, Any] | None:
        """The progress answer of any workflow, for the server's own loops (None: no such one)."""
        entry = self._fresh(workflow_id) or await self._entry(workflow_id)
        return entry.body if entry is not None else None

    async def backlogs(self, workflow_id: str) -> dict[str, TaskBacklog]:
        """Per task of the workflow: its backlog and measured rate (for launch control)."""
        entry = self._fresh(workflow_id) or await self._entry(workflow_id)
        return dict(entry.backlogs) if entry is not None else {}

    def _fresh(self, workflow_id: str) -> Entry | None:
        entry = self._entries.get(workflow_id)
        if entry is not None and time.monotonic() - entry.made < self.ttl_s:
            return entry
        return None

    async def _entry(self, workflow_id: str) -> Entry | None:
        fut = self._inflight.get(workflow_id)
        if fut is None:
            made_meanwhile = self._fresh(workflow_id)  # while this caller awaited its scope check
            if made_meanwhile is not None:
                return made_meanwhile
            fut = asyncio.ensure_future(self._compute(workflow_id))
            self._inflight[workflow_id] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(workflow_id, None))
        return await asyncio.shield(fut)  # one caller giving up does not cancel the others'

    async def _compute(self, workflow_id: str) -> Entry | None:
        snap = await progress.load(self.store, workflow_id)
        if snap is None:
            return None
        depths: dict[str, QueueDepth] | None = None
        broker_ts: float | None = None
        error = snap.broker_state()
        if error is None:
            try:
                depths = await self.broker.queue_depths(workflow_id, snap.mqids)
                broker_ts = self.clock()
            except (BrokerUnavailable, QueuesMissing) as e:
                error = str(e) or type(e).__name__
                LOGGER.info("progress of %s without queue depths: %s", workflow_id, error)
        now = self.clock()
        body = progress.assemble(
            snap, depths, broker_error=error, broker_ts=broker_ts, now=now, window_s=self.window_s
        )
        entry = Entry(
            owner=str(snap.workflow["owner"]),
            body=body,
            backlogs=progress.backlogs(snap, depths, now=now, window_s=self.window_s),
            made=time.monotonic(),
        )
        self.n_computed += 1
        self._entries[workflow_id] = entry
        self._entries.move_to_end(workflow_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry
