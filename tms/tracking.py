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
    sent_machines: dict[str, dict[str, int]] | None = None
    memory_bytes: int = 0
    """What its jobs were submitted with (0: not known; the hold policy then removes)."""


class Registry:
    """Tracked taskforces by uuid. Touched only from the event loop (and the watcher's pump)."""

    def __init__(self) -> None:
        self.by_uuid: dict[str, Tracked] = {}
        self.restored = False  # the server's list was read at least once (housekeeping waits for it)

    def track(
        self, uuid: str, cluster_id: int, n_workers: int, log_path: str, memory_bytes: int = 0
    ) -> Tracked:
        tracked = self.by_uuid.get(uuid)
        if tracked is None or tracked.cluster_id != cluster_id:
            state = ClusterState(cluster_id, n_workers)
            tracked = Tracked(uuid, cluster_id, log_path, state, memory_bytes=memory_bytes)
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


def submitted_memory(submit_dict: Any) -> int:
    """``request_memory`` of a submit description (``<n>M``, as the TMS writes it) in bytes."""
    text = str((submit_dict or {}).get("request_memory", "")) if isinstance(submit_dict, dict) else ""
    return int(text[:-1]) << 20 if text.endswith("M") and text[:-1].isdigit() else 0


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
                submitted_memory(tf.get("submit_dict")),
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
