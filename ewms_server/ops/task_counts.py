"""Task counts the TMS reports with its statuses: what they add to the tasks-done counters, and
the history samples they trigger."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..storage.base import Storage
from . import progress_history

Delta = Callable[[str, int], None]
"""(outcome "succeeded" | "failed", how many more) -> None: a metrics counter."""


@dataclass(frozen=True)
class Before:
    """The reported taskforces as they were before the report was applied."""

    counts: dict[str, tuple[int, int]]
    workflow_of: dict[str, str]


async def before(store: Storage, body: Mapping[str, Any]) -> Before:
    reported = list(body.get("task_counts_by_taskforce") or {})
    if not reported:
        return Before({}, {})
    docs = await store.find(
        "taskforces",
        {"taskforce_uuid": {"$in": reported}},
        projection=["taskforce_uuid", "workflow_id", "task_counts"],
    )
    return Before(
        {d["taskforce_uuid"]: progress_history.counts_of(d) for d in docs},
        {d["taskforce_uuid"]: d["workflow_id"] for d in docs},
    )


async def after(
    store: Storage,
    body: Mapping[str, Any],
    prior: Before,
    *,
    on_delta: Delta | None,
    min_interval_s: float,
    max_len: int,
) -> None:
    """Count what the report added (a count that went down -- a TMS re-reading an older log --
    adds nothing) and sample the history of the workflows it touched."""
    reported: Mapping[str, Mapping[str, int]] = body.get("task_counts_by_taskforce") or {}
    if not reported:
        return
    if on_delta is not None:
        for uuid, new in reported.items():
            if uuid not in prior.counts:
                continue  # not a known taskforce: the report's result says so
            old_s, old_f = prior.counts[uuid]
            on_delta("succeeded", max(0, int(new.get("succeeded", 0)) - old_s))
            on_delta("failed", max(0, int(new.get("failed", 0)) - old_f))
    workflows = dict.fromkeys(prior.workflow_of[u] for u in reported if u in prior.workflow_of)
    await progress_history.record(
        store, workflows, time.time(), min_interval_s=min_interval_s, max_len=max_len
    )
