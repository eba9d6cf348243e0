"""A workflow's progress: tasks done and failed (from the pilots, through the TMS), queue depths
(from the broker), rate and ETA (from the history), and the per-task backlog launch control
sizes autoscaled tasks by. Pure functions over one `Snapshot` of the store; the broker call and
the caching are `progress_cache.ProgressCache`'s.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..broker.base import QueueDepth
from ..storage.base import Storage
from . import progress_history as history

TOP_ERRORS = 10
MAX_INT = 2**63 - 1
"""Sums are clamped here: a count is a JSON integer of at most 64 bits."""


def _clamped(counts: Counter[str]) -> dict[str, int]:
    return {k: min(v, MAX_INT) for k, v in counts.items()}


@dataclass(frozen=True)
class Snapshot:
    """What the store knows about one workflow, read at once."""

    workflow: dict[str, Any]
    mqprofiles: list[dict[str, Any]]
    task_directives: list[dict[str, Any]]
    taskforces: list[dict[str, Any]]
    history: dict[str, Any] | None

    @property
    def workflow_id(self) -> str:
        return str(self.workflow["workflow_id"])

    @property
    def mqids(self) -> list[str]:
        return [p["mqid"] for p in self.mqprofiles]

    def input_mqids(self, task_id: str | None = None) -> list[str]:
        """The queues tasks read (of one task, or of any): where the backlog waits."""
        return list(
            dict.fromkeys(
                q
                for td in self.task_directives
                if task_id in (None, td["task_id"])
                for q in td["input_queues"]
            )
        )

    def broker_state(self) -> str | None:
        """Why the broker need not be asked, or None when it must be."""
        if self.workflow.get("queues_deleted"):
            return "the workflow's queues were deleted after it ended"
        if not self.mqprofiles:
            return "the workflow has no queues"
        if all(p.get("is_activated") and p.get("broker_type") is None for p in self.mqprofiles):
            return "no broker is configured (EWMS_BROKER_URL is unset)"
        if not any(p.get("is_activated") for p in self.mqprofiles) and not self.workflow.get(
            "queues_revoked"
        ):
            return "the workflow's queues are not activated yet"
        return None


@dataclass(frozen=True)
class TaskBacklog:
    """What launch control needs to size a task's workers (see docs/contracts.md section 5)."""

    task_id: str
    pending: int | None
    """Ready messages in the task's input queues (None: the broker could not be asked)."""
    in_flight: int | None
    """Delivered, unacknowledged messages in its input queues (tasks running on them)."""
    rate_per_s: float | None
    """Tasks of this task succeeded per second over the rate window."""
    running_workers: int
    """Its pilot jobs HTCondor reports running, over all its taskforces."""
    rate_per_worker: float | None
    """rate_per_s / running_workers (None when either is unknown or no worker runs)."""
    ts: float
    """When this was computed (the broker figures may be up to EWMS_PROGRESS_CACHE_S older)."""


async def load(store: Storage, workflow_id: str) -> Snapshot | None:
    wf = await store.get("workflows", {"workflow_id": workflow_id})
    if wf is None:
        return None
    flt = {"workflow_id": workflow_id}
    profiles, tds, tfs, hist = await asyncio.gather(
        store.find(
            "mqprofiles", flt, projection=["mqid", "alias", "is_public", "is_activated", "broker_type"]
        ),
        store.find("task_directives", flt, projection=["task_id", "input_queues", "output_queues"]),
        store.find(
            "taskforces",
            flt,
            projection=["task_id", "compound_statuses", "top_task_errors", "task_counts"],
        ),
        store.get("workflow_progress", flt),
    )
    return Snapshot(wf, profiles, tds, tfs, hist)


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else min(sum(v for v in values if v is not None), MAX_INT)


def _workers(taskforces: list[dict[str, Any]]) -> Counter[str]:
    """Pilots by their last chirped status, over every job (ended ones too)."""
    out: Counter[str] = Counter()
    for tf in taskforces:
        for by_pilot in (tf.get("compound_statuses") or {}).values():
            out.update({k: int(v) for k, v in by_pilot.items()})
    return out


def _running(taskforces: list[dict[str, Any]]) -> int:
    return sum(
        sum(int(v) for v in (tf.get("compound_statuses") or {}).get("RUNNING", {}).values())
        for tf in taskforces
    )


def assemble(
    snap: Snapshot,
    depths: dict[str, QueueDepth] | None,
    *,
    broker_error: str | None,
    broker_ts: float | None,
    now: float,
    window_s: float,
) -> dict[str, Any]:
    """The GET /v1/workflows/{workflow_id}/progress answer (schema: ProgressObject)."""
    none = QueueDepth(None, None, None)
    queues = {
        p["alias"]: {
            "mqid": p["mqid"],
            "is_public": bool(p["is_public"]),
            **vars((depths or {}).get(p["mqid"], none)),
        }
        for p in snap.mqprofiles
    }
    tasks: dict[str, Any] = {}
    for td in snap.task_directives:
        tfs = [tf for tf in snap.taskforces if tf["task_id"] == td["task_id"]]
        errors: Counter[str] = Counter()
        for tf in tfs:
            errors.update({k: int(v) for k, v in (tf.get("top_task_errors") or {}).items()})
        s, f = history.task_totals(tfs).get(td["task_id"], (0, 0))
        tasks[td["task_id"]] = {
            "succeeded": min(s, MAX_INT),
            "failed": min(f, MAX_INT),
            "workers": dict(sorted(_clamped(_workers(tfs)).items())),
            "top_errors": _clamped(Counter(dict(errors.most_common(TOP_ERRORS)))),
        }
    succeeded = min(sum(t["succeeded"] for t in tasks.values()), MAX_INT)
    failed = min(sum(t["failed"] for t in tasks.values()), MAX_INT)
    by_mqid = {q["mqid"]: q for q in queues.values()}
    inputs = [by_mqid[m] for m in snap.input_mqids() if m in by_mqid]
    pending = _sum([q["pending"] for q in inputs]) if depths is not None else None
    in_flight = _sum([q["in_flight"] for q in inputs]) if depths is not None else None
    dead = _sum([q["dead_lettered"] for q in queues.values()]) if depths is not None else None
    samples = (snap.history or {}).get("samples") or []
    rate = history.rate(samples, now, succeeded, window_s)
    backlog = None if pending is None or in_flight is None else pending + in_flight
    out: dict[str, Any] = {
        "workflow_id": snap.workflow_id,
        "deactivated": snap.workflow.get("deactivated"),
        "queues": queues,
        "tasks": tasks,
        "totals": {
            "succeeded": succeeded,
            "failed": failed,
            "pending": pending,
            "in_flight": in_flight,
            "dead_lettered": dead,
        },
        "rate_per_s": rate,
        "eta_s": history.eta(backlog, rate),
        "history": _with_now(samples, now, succeeded, failed),
        "broker_ts": broker_ts,
        "computed_ts": now,
    }
    if broker_error is not None:
        out["broker_error"] = broker_error
    return out


def _with_now(samples: list[list[float]], now: float, succeeded: int, failed: int) -> list[list[float]]:
    """The stored samples, and the current figures as the last point when they moved since."""
    points = [list(s) for s in samples]
    if not points or points[-1][1:] != [float(succeeded), float(failed)]:
        points.append([now, float(succeeded), float(failed)])
    return points


def backlogs(
    snap: Snapshot, depths: dict[str, QueueDepth] | None, *, now: float, window_s: float
) -> dict[str, TaskBacklog]:
    """Per task: its input queues' backlog and its measured rate per running worker."""
    out: dict[str, TaskBacklog] = {}
    task_samples = (snap.history or {}).get("task_samples") or {}
    for td in snap.task_directives:
        tid = td["task_id"]
        tfs = [tf for tf in snap.taskforces if tf["task_id"] == tid]
        mine = [(depths or {}).get(m) for m in snap.input_mqids(tid)]
        known = depths is not None and all(d is not None for d in mine)
        pending = _sum([d.pending for d in mine if d is not None]) if known else None
        in_flight = _sum([d.in_flight for d in mine if d is not None]) if known else None
        succeeded = history.task_totals(tfs).get(tid, (0, 0))[0]
        rate = history.rate(task_samples.get(tid, []), now, succeeded, window_s)
        running = _running(tfs)
        out[tid] = TaskBacklog(
            task_id=tid,
            pending=pending,
            in_flight=in_flight,
            rate_per_s=rate,
            running_workers=running,
            rate_per_worker=(rate / running) if rate is not None and running else None,
            ts=now,
        )
    return out
