"""Per-user quotas: how much one user may hold at once and how fast they may add to it.

Exceeding one is a 429 with Retry-After and a message naming the setting; admins are exempt.
The store is the source of truth, so replicas sharing it count alike: active workflows and a
workflow's live taskforces are counted with `count`; the per-minute rates come from the
creation times of the last minute's workflows and add-workers taskforces, found through the
time-ordered ids (`<prefix>-<ms, hex>-…`, a range on the unique id index). Every check walks
an index over what is active or recent, never a user's whole history
(benchmarks/bench_quotas.py).

A check and the insert it admits run under a per-user lock in this process, so one process
never lets a burst past a limit (the default single-process SQLite server is exact). Replicas
sharing a store each check before they insert: in the same instant each may admit one more,
so a burst overshoots a limit by at most (replicas - 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .caller import Caller
from .errors import Invalid, TooManyRequests
from .phases import TERMINAL

if TYPE_CHECKING:  # config imports this module, and the storage package imports config
    from .storage.base import Storage

WINDOW_S = 60.0
"""The per-minute limits count the events of the last WINDOW_S seconds."""
HOLD_RETRY_S = 60
"""Retry-After of a limit on what a user holds: no time frees it; the user's own finish,
abort or a taskforce's end does."""
ADD_WORKERS = "add-workers"
"""The stored `origin` of a taskforce made by add-workers (those of a create say "workflow")."""


@dataclass(frozen=True)
class Quotas:
    """The limits (server settings, see `ewms-server --help`); 0 = no limit."""

    max_active_workflows: int = 100
    max_workflows_per_min: int = 30
    max_taskforces_per_workflow: int = 1000
    max_add_workers_per_min: int = 60

    @classmethod
    def from_settings(cls, get: Callable[[str], str | None]) -> Quotas:
        """Raises ValueError naming the setting."""
        values = []
        for name in SETTING_NAMES:
            raw = get(name)
            try:
                n = int(raw or "")
            except ValueError:
                raise ValueError(f"{name}: expected a whole number (0 = no limit), got {raw!r}") from None
            if n < 0:
                raise ValueError(f"{name}: must be >= 0 (0 = no limit), got {n}")
            values.append(n)
        return cls(*values)


SETTING_NAMES = (
    "EWMS_USER_MAX_ACTIVE_WORKFLOWS",
    "EWMS_USER_MAX_WORKFLOWS_PER_MIN",
    "EWMS_MAX_TASKFORCES_PER_WORKFLOW",
    "EWMS_USER_MAX_ADD_WORKERS_PER_MIN",
)


def _id_floor(prefix: str, ts: float) -> str:
    """The smallest id of `prefix` made at `ts` or later (ids start with the ms in hex)."""
    return f"{prefix}-{max(0, int(ts * 1000)):012x}"


def _retry_after(times: list[float], limit: int, now: float) -> int:
    """Seconds until fewer than `limit` of `times` are inside the window."""
    times = sorted(times)
    frees = times[len(times) - limit] + WINDOW_S  # when the oldest one that must go leaves
    return max(1, math.ceil(frees - now))


class QuotaGate:
    """Admits creations within the quotas; one per server process."""

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, subject: str) -> asyncio.Lock:
        lock = self._locks.get(subject)
        if lock is None:
            lock = self._locks[subject] = asyncio.Lock()
        return lock

    def creating_workflow(
        self, store: Storage, caller: Caller, n_taskforces: int
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Around the insert of a new workflow of `caller` with `n_taskforces` taskforces."""
        q = self.quotas
        if caller.role != "admin" and 0 < q.max_taskforces_per_workflow < n_taskforces:
            raise Invalid(  # no wait makes it fit: not a 429
                f"body.tasks: the workflow would have {n_taskforces} taskforces (one per task and "
                f"cluster location), more than EWMS_MAX_TASKFORCES_PER_WORKFLOW={q.max_taskforces_per_workflow}"
            )
        # an active workflow's taskforces are never stopped: naming that lets the store use its
        # (taskforces_stopped, deactivated) index, so the count walks the active workflows of
        # all users, not this user's whole history
        active = {"taskforces_stopped": False, "deactivated": None, "owner": caller.subject}
        return self._admitting(
            caller,
            (q.max_active_workflows, q.max_workflows_per_min),
            lambda: self._hold(
                store, "workflows", active, q.max_active_workflows, "EWMS_USER_MAX_ACTIVE_WORKFLOWS",
                f"user {caller.subject}", "active workflows", ": finish or abort one first",
            ),
            lambda: self._rate(
                store, "workflows", "workflow_id", "WF", {}, caller, q.max_workflows_per_min,
                "new workflows", "EWMS_USER_MAX_WORKFLOWS_PER_MIN",
            ),
        )  # fmt: skip

    def adding_workers(
        self, store: Storage, caller: Caller, workflow_id: str
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Around the insert of an add-workers taskforce into `workflow_id`."""
        q = self.quotas
        live = {"workflow_id": workflow_id, "phase": {"$nin": sorted(str(p) for p in TERMINAL)}}
        return self._admitting(
            caller,
            (q.max_taskforces_per_workflow, q.max_add_workers_per_min),
            lambda: self._hold(
                store, "taskforces", live, q.max_taskforces_per_workflow, "EWMS_MAX_TASKFORCES_PER_WORKFLOW",
                f"workflow {workflow_id}", "taskforces not yet ended",
            ),
            lambda: self._rate(
                store, "taskforces", "taskforce_uuid", "TF", {"origin": ADD_WORKERS}, caller,
                q.max_add_workers_per_min, "add-workers calls", "EWMS_USER_MAX_ADD_WORKERS_PER_MIN",
            ),
        )  # fmt: skip

    def creating_job(
        self, store: Storage, caller: Caller, max_active_jobs: int
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Around the insert of a new job (EWMS_USER_MAX_ACTIVE_JOBS; its workflow does not
        count towards the workflow quotas)."""
        return self._admitting(
            caller,
            (max_active_jobs,),
            lambda: self.check_active_jobs(store, caller, max_active_jobs),
        )

    async def check_active_jobs(self, store: Storage, caller: Caller, max_active_jobs: int) -> None:
        """429 when `caller` already has the most unfinished jobs allowed (admins pass)."""
        if caller.role == "admin":
            return
        await self._hold(
            store, "jobs", {"owner": caller.subject, "finished_ts": None}, max_active_jobs,
            "EWMS_USER_MAX_ACTIVE_JOBS", f"user {caller.subject}", "unfinished jobs",
            ": wait for one to finish, or delete one",
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def _admitting(
        self, caller: Caller, limits: tuple[int, ...], *checks: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[None]:
        """Run `checks`, then the caller's insert, under the caller's lock; admins pass, and so
        does everyone when none of the checks' `limits` is set (the lock would only serialize
        a user's creates: 40 % of one user's POST /v1/workflows rate, measured)."""
        if caller.role == "admin" or not any(limits):
            yield
            return
        async with self._lock(caller.subject):
            for check in checks:
                await check()
            yield

    async def _hold(
        self,
        store: Storage,
        coll: str,
        flt: dict[str, Any],
        limit: int,
        setting: str,
        holder: str,
        what: str,
        advice: str = "",
    ) -> None:
        """A limit on what is held at once (0 = none)."""
        if not limit:
            return
        n = await store.count(coll, flt)
        if n >= limit:
            raise TooManyRequests(
                f"{holder} has {n} {what}, the most allowed ({setting}={limit}){advice}",
                retry_after=HOLD_RETRY_S,
            )

    async def _rate(
        self,
        store: Storage,
        coll: str,
        id_field: str,
        prefix: str,
        extra: dict[str, str],
        caller: Caller,
        limit: int,
        what: str,
        setting: str,
    ) -> None:
        """A limit on events in the last WINDOW_S seconds (0 = none)."""
        if not limit:
            return
        now = time.time()
        since = now - WINDOW_S
        recent = await store.find(  # sorted by id: the store walks the id index from `since` on
            coll,
            {id_field: {"$gte": _id_floor(prefix, since)}, **extra},
            projection=["owner", "timestamp"],
            sort=[(id_field, 1)],
        )
        times = [
            d["timestamp"] for d in recent if d.get("owner") == caller.subject and d["timestamp"] >= since
        ]
        if len(times) >= limit:
            raise TooManyRequests(
                f"user {caller.subject} made {len(times)} {what} in the last {WINDOW_S:g} s, the most "
                f"allowed ({setting}={limit})",
                retry_after=_retry_after(times, limit, now),
            )
