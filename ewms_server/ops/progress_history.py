"""A workflow's tasks-done history: bounded samples kept in the store, and rates measured on them.

Samples are taken when the TMS reports task counts (`POST /v1/tms/statuses/taskforces` with
`task_counts_by_taskforce`), at most every `min_interval_s` per workflow, the last `max_len`
kept; one `workflow_progress` document per workflow holds the workflow's samples and each
task's. Each sample is `[ts, succeeded, failed]`: tasks the pilots reported, summed over the
workflow's (or the task's) taskforces, ended jobs included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..storage.base import Change, DuplicateKey, Storage

Sample = list[float]
"""[ts, succeeded, failed]"""


def counts_of(tf: Mapping[str, Any]) -> tuple[int, int]:
    c = tf.get("task_counts") or {}
    return int(c.get("succeeded", 0)), int(c.get("failed", 0))


def task_totals(taskforces: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """{task_id: (succeeded, failed)} summed over the taskforces."""
    out: dict[str, tuple[int, int]] = {}
    for tf in taskforces:
        s, f = counts_of(tf)
        old = out.get(tf["task_id"], (0, 0))
        out[tf["task_id"]] = (old[0] + s, old[1] + f)
    return out


def _appended(samples: Sequence[Sample], sample: Sample, max_len: int) -> list[Sample]:
    if samples and list(samples[-1][1:]) == sample[1:]:
        return list(samples)[-max_len:]  # nothing changed: no new point
    return [*samples, sample][-max_len:]


async def record(
    store: Storage, workflow_ids: Iterable[str], now: float, *, min_interval_s: float, max_len: int
) -> int:
    """Take a sample of each workflow whose last one is older than `min_interval_s`; returns
    how many workflows got one. A replica that raced with another keeps the other's."""
    n = 0
    for wid in workflow_ids:
        doc = await store.get("workflow_progress", {"workflow_id": wid}, projection=["last_ts"])
        if doc is not None and now - doc["last_ts"] < min_interval_s:
            continue
        tfs = await store.find("taskforces", {"workflow_id": wid}, projection=["task_id", "task_counts"])
        per_task = task_totals(tfs)
        total = [
            float(now),
            float(sum(s for s, _ in per_task.values())),
            float(sum(f for _, f in per_task.values())),
        ]
        if doc is None:
            wf = await store.get("workflows", {"workflow_id": wid}, projection=["owner"])
            if wf is None:
                continue
            new = {
                "workflow_id": wid,
                "owner": wf["owner"],
                "last_ts": float(now),
                "samples": [total],
                "task_samples": {t: [[float(now), float(s), float(f)]] for t, (s, f) in per_task.items()},
            }
            try:
                await store.insert("workflow_progress", [new])
                n += 1
            except DuplicateKey:
                pass
            continue
        full = await store.get("workflow_progress", {"workflow_id": wid})
        if full is None:
            continue
        task_samples = dict(full.get("task_samples") or {})
        for t, (s, f) in per_task.items():
            task_samples[t] = _appended(task_samples.get(t, []), [float(now), float(s), float(f)], max_len)
        change = Change(
            set={
                "last_ts": float(now),
                "samples": _appended(full["samples"], total, max_len),
                "task_samples": task_samples,
            }
        )
        # compare-and-set on last_ts: of two replicas sampling at once, one wins
        if await store.transition(
            "workflow_progress", {"workflow_id": wid, "last_ts": full["last_ts"]}, change
        ):
            n += 1
    return n


def rate(
    samples: Sequence[Sequence[float]], now: float, succeeded_now: float, window_s: float
) -> float | None:
    """Tasks succeeded per second over about the last `window_s`, up to `now` (so a stop in
    the work shows as a falling rate); None without at least a second of history."""
    if not samples:
        return None
    base = samples[0]
    for sample in samples:
        if sample[0] <= now - window_s:
            base = sample
        else:
            break
    span = now - base[0]
    if span < 1.0:
        return None
    return max(0.0, (succeeded_now - base[1]) / span)


def eta(backlog: int | None, rate_per_s: float | None) -> float | None:
    """Seconds until the backlog is worked off at `rate_per_s`: 0 with no backlog, None when
    either is unknown or nothing is being done."""
    if backlog is None:
        return None
    if backlog == 0:
        return 0.0
    if not rate_per_s:
        return None
    return backlog / rate_per_s
