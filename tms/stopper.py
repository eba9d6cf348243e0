"""Stopper pass: pending-stopper taskforce -> remove its cluster -> condor-rm."""

from __future__ import annotations

import dataclasses
import logging

from .backends.base import Backend, BackendError
from .client import TmsClient
from .tracking import Registry

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StopperDeps:
    client: TmsClient
    backend: Backend
    registry: Registry
    schedd: str
    interval: float


async def stop_one(deps: StopperDeps) -> bool:
    """Handle the next pending-stopper taskforce; False when there was none (or it failed)."""
    taskforce = await deps.client.get_pending_stopper(deps.schedd)
    if not taskforce:
        return False
    uuid = taskforce["taskforce_uuid"]
    cluster_id = taskforce.get("cluster_id")
    try:
        if cluster_id is None:
            cluster_id = await deps.backend.find_cluster(uuid)
        if cluster_id is not None:
            await deps.backend.remove(int(cluster_id), "EWMS: taskforce stopped (workflow deactivated)")
    except BackendError as e:
        LOGGER.error("could not remove cluster %s of %s: %s", cluster_id, uuid, e)
        await deps.client.fail_rm(uuid, str(e))
        return False  # wait before trying again
    LOGGER.info("removed cluster %s of taskforce %s", cluster_id, uuid)
    if cluster_id is not None and taskforce.get("job_event_log_fpath"):
        deps.registry.track(
            uuid, int(cluster_id), int(taskforce.get("n_workers") or 0), taskforce["job_event_log_fpath"]
        )
    await deps.client.confirm_rm(uuid)
    return True
