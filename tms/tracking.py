"""Which clusters this TMS watches, and the loop that restores them from the server."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .client import TmsClient
from .jobstate import ClusterState

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass
class Tracked:
    """One taskforce's cluster being watched (mutable: the watcher updates it)."""

    taskforce_uuid: str
    cluster_id: int
    log_path: str
    state: ClusterState
    sent_statuses: dict[str, dict[str, int]] | None = None
    sent_errors: dict[str, int] | None = None
    sent_counts: dict[str, int] | None = None
    sent_diagnosis: dict[str, Any] | None = None


class Registry:
    """Tracked taskforces by uuid. Touched only from the event loop (and the watcher's pump)."""

    def __init__(self) -> None:
        self.by_uuid: dict[str, Tracked] = {}
        self.restored = False  # the server's list was read at least once (housekeeping waits for it)

    def track(self, uuid: str, cluster_id: int, n_workers: int, log_path: str) -> Tracked:
        tracked = self.by_uuid.get(uuid)
        if tracked is None or tracked.cluster_id != cluster_id:
            tracked = Tracked(uuid, cluster_id, log_path, ClusterState(cluster_id, n_workers))
            self.by_uuid[uuid] = tracked
            LOGGER.info("watching cluster %s of taskforce %s (%s)", cluster_id, uuid, log_path)
        return tracked

    def untrack(self, uuid: str) -> None:
        self.by_uuid.pop(uuid, None)

    def live_paths(self) -> set[str]:
        return {t.log_path for t in self.by_uuid.values()}


@dataclasses.dataclass(frozen=True)
class TrackerDeps:
    client: TmsClient
    registry: Registry
    schedd: str
    interval: float


def restore(registry: Registry, taskforces: list[dict[str, Any]]) -> int:
    n = 0
    for tf in taskforces:
        if tf.get("cluster_id") is None or not tf.get("job_event_log_fpath"):
            continue
        if tf["taskforce_uuid"] not in registry.by_uuid:
            registry.track(
                tf["taskforce_uuid"],
                int(tf["cluster_id"]),
                int(tf.get("n_workers") or 0),
                tf["job_event_log_fpath"],
            )
            n += 1
    registry.restored = True
    return n


async def restore_once(deps: TrackerDeps) -> bool:
    """Re-read from the server which clusters must be watched (at start, then now and then)."""
    n = restore(deps.registry, await deps.client.watched_taskforces(deps.schedd))
    if n:
        LOGGER.info("now watching %d more cluster(s) listed by the server", n)
    return False
