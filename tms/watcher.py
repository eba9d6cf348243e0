"""Watcher loop: reads job event logs, reports statuses, applies the hold policy, ends clusters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from .backends.base import Backend, BackendError, IdleReport
from .client import ServerRejected, TmsClient
from .diagnosis import diagnosis, without_ts
from .follower import LogFollower
from .jobstate import IDLE, RUNNING, ClusterState, JobState, is_memory_hold
from .quarantine import QuarantineView
from .tracking import Registry, Tracked

if TYPE_CHECKING:
    from .metrics import TmsMetrics

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HoldPolicy:
    """Release a held job up to ``max_releases`` times, then remove it; act after ``delay`` s.
    A job held for exceeding its memory is resubmitted with ``memory_factor`` times its memory,
    up to ``memory_cap`` bytes (removed when already there): released unchanged it would only
    be held again."""

    max_releases: int = 2
    delay: float = 60.0
    memory_cap: int = 16 << 30
    memory_factor: float = 1.5

    def next_action(self, job: JobState, memory_bytes: int) -> tuple[str, int | None]:
        """("release" | "resubmit" | "remove", the memory to resubmit with)."""
        if is_memory_hold(job.hold_code, job.hold_reason):
            current = job.memory_bytes or memory_bytes
            if 0 < current < self.memory_cap:
                return "resubmit", min(self.memory_cap, int(current * self.memory_factor))
            return "remove", None
        return ("release" if job.n_released < self.max_releases else "remove"), None


@dataclasses.dataclass(frozen=True)
class WatcherDeps:
    client: TmsClient
    backend: Backend
    registry: Registry
    interval: float
    hold_policy: HoldPolicy
    batch: int = 50_000
    diagnosis_interval: float = 60.0
    """Seconds between asking the backend why idle jobs are idle (one schedd query each time)."""
    metrics: TmsMetrics | None = None
    report_chunk: int = 500
    """Taskforces per statuses POST (a report must stay under the server's body limit)."""
    quarantine: QuarantineView | None = None


class Watcher:
    """One instance per TMS; ``pass_once`` is one full pass."""

    def __init__(self, deps: WatcherDeps) -> None:
        self.deps = deps
        self.followers: dict[str, LogFollower] = {}
        self.idle_reports: dict[int, IdleReport] = {}
        self._explained_at = -float("inf")
        self.lag: tuple[int, float] = (0, 0.0)
        """(bytes behind, seconds behind) over the watched logs, after the last read."""

    # --- reading (blocking: off the loop) ------------------------------------------------------

    def _pump_all(self, groups: dict[str, dict[int, ClusterState]], budget: int) -> int:
        total = 0
        for path, clusters in groups.items():
            follower = self.followers.get(path)
            if follower is None:
                follower = self.followers[path] = LogFollower(path)
            total += follower.pump(clusters, budget)
        return total

    async def read_logs(self) -> int:
        """Read every watched log to its end, in batches so the event loop keeps breathing."""
        groups: dict[str, dict[int, ClusterState]] = {}
        for t in self.deps.registry.by_uuid.values():
            groups.setdefault(t.log_path, {})[t.cluster_id] = t.state
        for path in set(self.followers) - set(groups):
            self.followers.pop(path).close()
        total = 0
        while groups:
            n = await asyncio.to_thread(self._pump_all, groups, self.deps.batch)
            total += n
            if n == 0:  # every log read to its end
                break
        self.lag = await asyncio.to_thread(self._lag)
        return total

    def _lag(self) -> tuple[int, float]:
        lags = [f.lag() for f in self.followers.values()]
        return sum(b for b, _ in lags), max((s for _, s in lags), default=0.0)

    # --- acting ---------------------------------------------------------------------------------

    async def apply_hold_policy(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        policy = self.deps.hold_policy
        for t in list(self.deps.registry.by_uuid.values()):
            for proc, job in t.state.held_jobs():
                if job.acted or now - job.held_ts < policy.delay:
                    continue
                action, memory = policy.next_action(job, t.memory_bytes)
                try:
                    if action == "resubmit" and memory is not None:
                        LOGGER.info(
                            "resubmitting job %s.%s with %d MiB (%s)",
                            t.cluster_id,
                            proc,
                            memory >> 20,
                            job.hold_reason,
                        )
                        await self.deps.backend.resubmit(t.cluster_id, proc, memory)
                        job.memory_bytes = memory
                    elif action == "release":
                        LOGGER.info("releasing held job %s.%s (%s)", t.cluster_id, proc, job.hold_reason)
                        await self.deps.backend.release(t.cluster_id, proc)
                    else:
                        why = (
                            f"held at the memory cap ({policy.memory_cap >> 20} MiB)"
                            if is_memory_hold(job.hold_code, job.hold_reason)
                            else f"held {job.n_released + 1} times"
                        )
                        LOGGER.info("removing job %s.%s: %s", t.cluster_id, proc, why)
                        await self.deps.backend.remove(t.cluster_id, f"EWMS: {why}: {job.hold_reason}", proc)
                    t.state.record_decision(proc, action, job.hold_reason, memory, now)
                    job.acted = True
                    t.state.dirty = True  # the diagnosis says what the policy did
                except BackendError as e:
                    LOGGER.warning("hold policy on %s.%s failed: %s", t.cluster_id, proc, e)

    async def explain_idle(self) -> None:
        """Every diagnosis interval: ask the backend why the idle jobs are idle (one call)."""
        if time.monotonic() - self._explained_at < self.deps.diagnosis_interval:
            return
        self._explained_at = time.monotonic()
        tracked = list(self.deps.registry.by_uuid.values())
        idle = {
            t.cluster_id: procs
            for t in tracked
            if (procs := sorted(p for p, j in t.state.live.items() if j.status == IDLE))
        }
        running = sum(1 for t in tracked for j in t.state.live.values() if j.status == RUNNING)
        reports = await self.deps.backend.explain_idle(idle, running) if idle else {}
        for t in tracked:
            if reports.get(t.cluster_id) != self.idle_reports.get(t.cluster_id):
                t.state.dirty = True
        self.idle_reports = reports

    async def send_statuses(self) -> int:
        """Bulk POSTs with every taskforce whose statuses, errors, task counts or diagnosis changed."""
        changed: list[tuple[Tracked, dict[str, Any]]] = []
        now = time.time()
        for t in self.deps.registry.by_uuid.values():
            if not t.state.dirty:
                continue
            t.state.dirty = False
            report: dict[str, Any] = {
                "statuses": t.state.compound_statuses(),
                "errors": t.state.top_task_errors(),
                "counts": t.state.task_counts(),
                "diagnosis": diagnosis(
                    t.state,
                    self.deps.hold_policy,
                    self.deps.backend.name,
                    self.idle_reports.get(t.cluster_id),
                    now,
                    t.memory_bytes,
                ),
                "machines": t.state.machine_counts(),
            }
            if (
                report["statuses"] != t.sent_statuses
                or report["errors"] != t.sent_errors
                or report["counts"] != t.sent_counts
                or without_ts(report["diagnosis"]) != t.sent_diagnosis
                or report["machines"] != t.sent_machines
            ):
                changed.append((t, report))
        step = self.deps.report_chunk
        for i in range(0, len(changed), step):
            try:
                await self._send(changed[i : i + step])
            except BaseException:
                for t, _ in changed[i:]:
                    t.state.dirty = True  # resend next time
                raise
        return len(changed)

    async def _send(self, changed: list[tuple[Tracked, dict[str, Any]]]) -> None:
        try:
            await self.deps.client.send_statuses(
                {t.taskforce_uuid: r["statuses"] for t, r in changed},
                {t.taskforce_uuid: r["errors"] for t, r in changed},
                task_counts={t.taskforce_uuid: r["counts"] for t, r in changed},
                diagnosis={t.taskforce_uuid: r["diagnosis"] for t, r in changed},
                # only what changed: the server weighs each machine's counts on arrival
                machines={
                    t.taskforce_uuid: r["machines"]
                    for t, r in changed
                    if r["machines"] and r["machines"] != t.sent_machines
                },
            )
        except ServerRejected as e:
            LOGGER.error("statuses rejected: %s", e)
        for t, r in changed:
            t.sent_statuses, t.sent_errors, t.sent_counts = r["statuses"], r["errors"], r["counts"]
            t.sent_diagnosis = without_ts(r["diagnosis"])
            t.sent_machines = r["machines"]

    async def complete_gone(self) -> list[str]:
        done = []
        for t in list(self.deps.registry.by_uuid.values()):
            if not t.state.gone:
                continue
            try:
                await self.deps.client.confirm_complete(t.taskforce_uuid, int(time.time()))
                LOGGER.info(
                    "cluster %s of taskforce %s is gone: condor-complete", t.cluster_id, t.taskforce_uuid
                )
            except ServerRejected as e:
                LOGGER.warning("condor-complete of %s refused: %s", t.taskforce_uuid, e)
            self.deps.registry.untrack(t.taskforce_uuid)
            done.append(t.taskforce_uuid)
        return done

    async def pass_once(self) -> bool:
        """One full pass; False: wait the interval before the next."""
        await self.deps.backend.poll()
        await self.read_logs()
        await self.apply_hold_policy()
        await self.explain_idle()
        await self.send_statuses()
        await self.complete_gone()
        if self.deps.quarantine is not None:
            await self.deps.quarantine.refresh()
        if self.deps.metrics is not None:
            self.deps.metrics.observe_watch(self.deps.registry, self.lag)
        return False

    def close(self) -> None:
        for f in self.followers.values():
            f.close()
        self.followers.clear()
