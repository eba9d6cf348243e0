"""The autoscaler: each pass sizes every active autoscaled task from its backlog.

For each task of an active workflow with `autoscale`: its backlog from the progress cache
(`deps.progress.backlogs`, no extra broker call), the workers it holds and runs from its live
taskforces; `autoscale.controller.wanted` says how many the backlog calls for; the caps are
divided fairly among all autoscaled tasks (`autoscale.share.allocate`); `decide` applies the
hold-down; the decision is acted on (`autoscale.actions`) and recorded on the task directive.
Woken by statuses reports and new workflows; else every EWMS_AUTOSCALE_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..autoscale import actions
from ..autoscale.controller import Action, Bounds, Observation, Want, decide, wanted
from ..autoscale.settings import AutoscaleSettings
from ..autoscale.share import Demand, Grant, allocate
from ..config import Location
from ..ops import workers
from ..ops.progress import TaskBacklog
from ..storage.base import Storage

LOGGER = logging.getLogger("ewms_server.autoscale")
BATCH = 1000
MIN_GAP_S = 0.5


@dataclass
class Autoscaler:
    store: Storage
    backlogs: Callable[[str], Any]
    """`ProgressCache.backlogs`: workflow id -> {task id: TaskBacklog} (awaitable)."""
    settings: AutoscaleSettings
    locations: Mapping[str, Location]
    wake_launch: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    n_scale_outs: int = field(default=0)
    _last_pass: float = -MIN_GAP_S
    _figures: dict[str, tuple[tuple[int | None, int | None], int]] = field(default_factory=dict)
    """Per task: its last queue figures, and the most workers it held since they last changed
    (see Observation.stale)."""

    async def one_pass(self) -> bool:
        # statuses reports wake it many times a second on a busy server: at most one pass per
        # MIN_GAP_S (a wake during the wait is served by the pass that follows it)
        gap = self._last_pass + MIN_GAP_S - time.monotonic()
        if gap > 0:
            await asyncio.sleep(gap)
        self._last_pass = time.monotonic()
        tasks = await self.store.find(
            "task_directives",
            {"autoscale.active": True},
            projection=["task_id", "workflow_id", "owner", "cluster_locations", "autoscale"],
            sort=[("task_id", 1)],  # ids are time-ordered: oldest first
            limit=BATCH,
        )
        if not tasks:
            return False
        tasks = await self._active(tasks)
        live = await self.store.find(
            "taskforces", {"phase": {"$in": workers.LIVE}}, projection=workers.PROJECTION
        )
        mine: dict[str, list[dict[str, Any]]] = defaultdict(list)
        fixed_user: Counter[str] = Counter()
        fixed_loc: Counter[str] = Counter()
        ids = {t["task_id"] for t in tasks}
        for tf in live:
            if tf["task_id"] in ids:
                mine[tf["task_id"]].append(tf)
            else:
                fixed_user[tf["owner"]] += workers.held(tf)
                fixed_loc[tf["cluster_location"]] += workers.held(tf)
        seen: dict[str, Observation] = {}
        wants: dict[str, Want] = {}
        for t in tasks:
            backlog = (await self.backlogs(t["workflow_id"])).get(t["task_id"])
            seen[t["task_id"]] = self._observe(t["task_id"], backlog, mine[t["task_id"]])
            scale = t["autoscale"]
            bounds = Bounds(scale["min_workers"], scale["max_workers"])
            wants[t["task_id"]] = wanted(
                seen[t["task_id"]], bounds, self.settings.target_drain_s, self.settings.messages_per_worker
            )
        grants = allocate(
            [
                Demand(
                    t["task_id"],
                    t["owner"],
                    tuple(t["cluster_locations"]),
                    wants[t["task_id"]].workers,
                    held=_by_location(mine[t["task_id"]]),
                )
                for t in tasks
            ],
            fixed_by_user=fixed_user,
            fixed_by_location=fixed_loc,
            user_max=self.settings.user_max_workers,
            location_max=self.settings.location_max_workers,
            share=self.settings.share,
        )
        for t in tasks:
            tid = t["task_id"]
            try:
                await self._apply(t, seen[tid], wants[tid], grants[tid], mine[tid])
            except Exception:  # one task's trouble must not stall the others
                LOGGER.exception("task %s: autoscaling failed; retried next pass", tid)
        return False

    def _observe(
        self, task_id: str, backlog: TaskBacklog | None, taskforces: list[dict[str, Any]]
    ) -> Observation:
        running = sum(workers.running(tf) for tf in taskforces)
        current = sum(workers.held(tf) for tf in taskforces)
        rate = backlog.rate_per_s if backlog is not None else None
        figures = (backlog.pending, backlog.in_flight) if backlog is not None else (None, None)
        last, most = self._figures.get(task_id, (None, 0))
        most = max(most, current) if last == figures else current
        self._figures[task_id] = (figures, most)
        stale = current < most
        return Observation(
            pending=figures[0],
            in_flight=figures[1],
            rate_per_worker=(rate / running) if rate and running else None,
            running=running,
            current=current,
            stale=stale,
        )

    async def _active(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Tasks whose workflow is still active; the others stop being autoscaled."""
        out = []
        for wid in dict.fromkeys(t["workflow_id"] for t in tasks):
            wf = await self.store.get("workflows", {"workflow_id": wid}, projection=["deactivated"])
            for t in (t for t in tasks if t["workflow_id"] == wid):
                if wf is None or wf["deactivated"] is not None:
                    await actions.deactivate(self.store, t["task_id"], t["autoscale"])
                    self._figures.pop(t["task_id"], None)
                else:
                    out.append(t)
        return out

    async def _apply(
        self,
        task: dict[str, Any],
        obs: Observation,
        want: Want,
        grant: Grant,
        taskforces: list[dict[str, Any]],
    ) -> None:
        scale = task["autoscale"]
        outcome = decide(
            obs,
            want,
            cap=grant.workers,
            cap_reason=grant.cap_reason,
            low_since=scale.get("low_since"),
            now=self.clock(),
            hold_down_s=self.settings.hold_down_s,
        )
        d = outcome.decision
        if d.action == Action.SCALE_OUT:
            made = await actions.scale_out(
                self.store, self.locations, task["task_id"], grant.add, self.settings.pilot_env()
            )
            self.n_scale_outs += 1
            LOGGER.info(
                "task %s: scale out %d -> %d (%s): %s", task["task_id"], d.current, d.target, d.reason, made
            )
            self.wake_launch()
        elif d.action == Action.SCALE_IN:
            # a cap below what it holds (another user's fair share) takes running workers too
            preempt = d.cap is not None
            for tf in actions.surplus(taskforces, d.current - d.target, preempt=preempt):
                await actions.stop(self.store, tf, f"autoscale: scale in to {d.target} workers")
            LOGGER.info("task %s: scale in %d -> %d (%s)", task["task_id"], d.current, d.target, d.reason)
        await actions.record(self.store, task["task_id"], scale, d, outcome.low_since)


def _by_location(taskforces: list[dict[str, Any]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for tf in taskforces:
        out[tf["cluster_location"]] += workers.held(tf)
    return dict(out)
