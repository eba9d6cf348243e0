"""Wires the TMS loops together and runs them until ``stop`` is set."""

from __future__ import annotations

import asyncio
import logging

from . import housekeeping, starter, stopper, tracking, watcher
from .backends.base import Backend
from .client import TmsClient
from .config import TmsConfig

LOGGER = logging.getLogger(__name__)


def make_backend(cfg: TmsConfig) -> Backend:
    if cfg.backend == "local":
        from .backends.local import LocalBackend

        return LocalBackend(cfg.local_state_dir, cfg.local_job_command)
    from .backends.htcondor import HTCondorBackend

    return HTCondorBackend(cfg.schedd)


async def run(
    cfg: TmsConfig, stop: asyncio.Event, *, backend: Backend | None = None, client: TmsClient | None = None
) -> None:
    backend = backend or make_backend(cfg)
    client = client or TmsClient.connect(
        cfg.server_url, cfg.token, stop, timeout=cfg.request_timeout, backoff_max=cfg.backoff_max
    )
    registry = tracking.Registry()
    LOGGER.info("TMS for schedd %r, backend %s, logs in %s", cfg.schedd, backend.name, cfg.job_event_log_dir)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                tracking.run(tracking.TrackerDeps(client, registry, cfg.schedd, cfg.tracker_interval), stop)
            )
            tg.create_task(starter.run(starter.StarterDeps(cfg, client, backend, registry), stop))
            tg.create_task(
                stopper.run(
                    stopper.StopperDeps(client, backend, registry, cfg.schedd, cfg.stopper_interval), stop
                )
            )
            tg.create_task(
                watcher.run(
                    watcher.WatcherDeps(
                        client,
                        backend,
                        registry,
                        cfg.watcher_interval,
                        watcher.HoldPolicy(cfg.hold_max_releases, cfg.hold_release_delay),
                    ),
                    stop,
                )
            )
            tg.create_task(
                housekeeping.run(
                    housekeeping.HousekeepingDeps(
                        registry,
                        cfg.job_event_log_dir,
                        cfg.compress_after,
                        cfg.delete_after,
                        cfg.housekeeping_interval,
                    ),
                    stop,
                )
            )
    finally:
        await backend.close()
        client.close()
