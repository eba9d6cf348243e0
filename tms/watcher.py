"""Watcher loop: reads job event logs, reports statuses, applies the hold policy, ends clusters."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from .backends.base import Backend, BackendError
from .client import ServerRejected, TmsClient
from .follower import LogFollower
from .jobstate import ClusterState
from .tracking import Registry, Tracked

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HoldPolicy:
    """Release a held job up to ``max_releases`` times, then remove it; act after ``delay`` s."""

    max_releases: int = 2
    delay: float = 60.0


@dataclasses.dataclass(frozen=True)
class WatcherDeps:
    client: TmsClient
    backend: Backend
    registry: Registry
    interval: float
    hold_policy: HoldPolicy
    batch: int = 50_000


class Watcher:
    """One instance per TMS; ``pass_once`` is one full pass."""

    def __init__(self, deps: WatcherDeps) -> None:
        self.deps = deps
        self.followers: dict[str, LogFollower] = {}

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
        return total

    # --- acting ---------------------------------------------------------------------------------

    async def apply_hold_policy(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        policy = self.deps.hold_policy
        for t in list(self.deps.registry.by_uuid.values()):
            for proc, job in t.state.held_jobs():
                if job.acted or now - job.held_ts < policy.delay:
                    continue
                try:
                    if job.n_released < policy.max_releases:
                        LOGGER.info("releasing held job %s.%s (%s)", t.cluster_id, proc, job.hold_reason)
                        await self.deps.backend.release(t.cluster_id, proc)
                    else:
                        LOGGER.info(
                            "removing job %s.%s: held again after %d releases",
                            t.cluster_id,
                            proc,
                            job.n_released,
                        )
                        await self.deps.backend.remove(
                            t.cluster_id, f"EWMS: held {job.n_released + 1} times: {job.hold_reason}", proc
                        )
                    job.acted = True
                except BackendError as e:
                    LOGGER.warning("hold policy on %s.%s failed: %s", t.cluster_id, proc, e)

    async def send_statuses(self) -> int:
        """One bulk POST with every taskforce whose statuses or errors changed."""
        statuses: dict[str, dict[str, dict[str, int]]] = {}
        errors: dict[str, dict[str, int]] = {}
        changed: list[tuple[Tracked, dict[str, dict[str, int]], dict[str, int]]] = []
        for t in self.deps.registry.by_uuid.values():
            if not t.state.dirty:
                continue
            t.state.dirty = False
            cs, te = t.state.compound_statuses(), t.state.top_task_errors()
            if cs != t.sent_statuses or te != t.sent_errors:
                statuses[t.taskforce_uuid], errors[t.taskforce_uuid] = cs, te
                changed.append((t, cs, te))
        if not changed:
            return 0
        try:
            await self.deps.client.send_statuses(statuses, errors)
        except ServerRejected as e:
            LOGGER.error("statuses rejected: %s", e)
        except BaseException:
            for t, _, _ in changed:
                t.state.dirty = True  # resend next time
            raise
        for t, cs, te in changed:
            t.sent_statuses, t.sent_errors = cs, te
        return len(changed)

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
        await self.send_statuses()
        await self.complete_gone()
        return False

    def close(self) -> None:
        for f in self.followers.values():
            f.close()
        self.followers.clear()
