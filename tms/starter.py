"""Starter pass: pending-starter taskforce -> one cluster (idempotent) -> condor-submit."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from .backends.base import Backend, BackendError
from .client import ServerRejected, TmsClient
from .config import TmsConfig
from .submit import InvalidTaskforce, build_spec, prepare_job_dir
from .tracking import Registry

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StarterDeps:
    cfg: TmsConfig
    client: TmsClient
    backend: Backend
    registry: Registry


def _runner_and_chirp(deps: StarterDeps) -> tuple[str, str]:
    if deps.backend.name == "local":
        return "process", "file"
    return deps.cfg.pilot_runner, "htcondor"


async def _still_ours(deps: StarterDeps, uuid: str, cluster_id: int) -> bool:
    """After a 404 on condor-submit: does the server already know this very cluster?"""
    for tf in await deps.client.watched_taskforces(deps.cfg.schedd):
        if tf.get("taskforce_uuid") == uuid:
            return tf.get("cluster_id") == cluster_id
    return False


async def start_one(deps: StarterDeps) -> bool:
    """Handle the next pending-starter taskforce; False when there was none."""
    found = await deps.client.get_pending_starter(deps.cfg.schedd)
    if not found:
        return False
    taskforce: dict[str, Any] = found["taskforce"]
    uuid = taskforce["taskforce_uuid"]
    runner, chirp = _runner_and_chirp(deps)
    try:
        spec, secrets = build_spec(
            deps.cfg,
            taskforce,
            found["task_directive"],
            found.get("mqprofiles") or [],
            runner=runner,
            chirp=chirp,
            secrets_fetch_token=found.get("secrets_fetch_token"),
        )
        cluster_id = await deps.backend.find_cluster(uuid)
        if cluster_id is not None:
            LOGGER.warning(
                "taskforce %s already has cluster %s: reporting it, not submitting again", uuid, cluster_id
            )
        else:
            await asyncio.to_thread(prepare_job_dir, spec, secrets)
            cluster_id = await deps.backend.submit(spec)
            LOGGER.info("submitted taskforce %s as cluster %s (%d jobs)", uuid, cluster_id, spec.n_workers)
    except (InvalidTaskforce, BackendError, OSError) as e:  # a bug of ours is not a failed submit
        LOGGER.error("could not submit taskforce %s: %s", uuid, e)
        await deps.client.fail_submit(uuid, f"{type(e).__name__}: {e}")
        return True
    deps.registry.track(uuid, cluster_id, spec.n_workers, spec.job_event_log_fpath)
    body = {
        "cluster_id": cluster_id,
        "n_workers": spec.n_workers,
        "submit_dict": spec.submit_dict,
        "job_event_log_fpath": spec.job_event_log_fpath,
    }
    try:
        await deps.client.confirm_submit(uuid, body)
    except ServerRejected as e:
        if e.status == 404 and await _still_ours(deps, uuid, cluster_id):
            return True
        # the server will never watch this cluster (workflow ended meanwhile...): do not leave it running
        LOGGER.error("condor-submit of %s refused (%s): removing cluster %s", uuid, e, cluster_id)
        try:
            await deps.backend.remove(cluster_id, "EWMS: taskforce no longer pending-starter")
        except BackendError as be:
            LOGGER.error("could not remove cluster %s: %s", cluster_id, be)
    return True
