"""Wires the TMS loops together and runs them until ``stop`` is set (or the token is refused)."""

from __future__ import annotations

import asyncio
import logging

from . import housekeeping, loops, starter, stopper, tracking, watcher
from .backends.base import Backend
from .client import TmsClient
from .config import TmsConfig
from .quarantine import QuarantineView

LOGGER = logging.getLogger(__name__)


def make_backend(cfg: TmsConfig) -> Backend:
    if cfg.backend == "local":
        from .backends.local import LocalBackend

        return LocalBackend.from_config(cfg)
    from .backends.htcondor import HTCondorBackend

    return HTCondorBackend(cfg.schedd)


def setup_problems(cfg: TmsConfig) -> list[str]:
    """What in this machine's setup keeps the configured backend from running, in words."""
    if cfg.backend == "local":
        from .backends.local import setup_problems as local_problems

        return local_problems(cfg)
    return []


async def run(
    cfg: TmsConfig, stop: asyncio.Event, *, backend: Backend | None = None, client: TmsClient | None = None
) -> str | None:
    """Returns None after a clean stop, else why the TMS cannot go on."""
    backend = backend or make_backend(cfg)
    client = client or TmsClient.connect(
        cfg.server_url, cfg.token, stop, timeout=cfg.request_timeout, backoff_max=cfg.backoff_max
    )
    registry = tracking.Registry()
    metrics, metrics_server = None, None
    if cfg.metrics_port is not None:
        from .metrics import TmsMetrics

        metrics = TmsMetrics()
        try:
            metrics_server = metrics.serve(cfg.metrics_host, cfg.metrics_port)
        except OSError as e:
            await backend.close()
            client.close()
            return f"EWMS_TMS_METRICS_PORT: cannot listen on {cfg.metrics_host}:{cfg.metrics_port}: {e.strerror or e}"
        client.metrics = metrics
    quarantine = QuarantineView(client, backend, cfg.schedd, cfg.quarantine_interval)
    watch = watcher.Watcher(
        watcher.WatcherDeps(
            client,
            backend,
            registry,
            cfg.watcher_interval,
            watcher.HoldPolicy(cfg.hold_max_releases, cfg.hold_release_delay, cfg.hold_memory_cap),
            diagnosis_interval=cfg.diagnosis_interval,
            metrics=metrics,
            quarantine=quarantine,
        )
    )
    tracker = tracking.TrackerDeps(client, registry, cfg.schedd, cfg.tracker_interval)
    start = starter.StarterDeps(cfg, client, backend, registry, quarantine)
    stops = stopper.StopperDeps(client, backend, registry, cfg.schedd, cfg.stopper_interval)
    keep = housekeeping.HousekeepingDeps(
        registry, cfg.job_event_log_dir, cfg.compress_after, cfg.delete_after, cfg.housekeeping_interval
    )
    LOGGER.info("TMS for schedd %r, backend %s, logs in %s", cfg.schedd, backend.name, cfg.job_event_log_dir)
    try:
        return await loops.run_all(
            [
                (loops.LoopState("tracker", cfg.tracker_interval), lambda: tracking.restore_once(tracker)),
                (loops.LoopState("starter", cfg.starter_interval), lambda: starter.start_one(start)),
                (loops.LoopState("stopper", cfg.stopper_interval), lambda: stopper.stop_one(stops)),
                (loops.LoopState("watcher", cfg.watcher_interval), watch.pass_once),
                (
                    loops.LoopState("housekeeping", lambda: housekeeping.next_wait(keep)),
                    lambda: housekeeping.sweep_once(keep),
                ),
            ],
            stop,
            backoff_max=cfg.backoff_max,
        )
    finally:
        watch.close()
        await backend.close()
        client.close()
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.shutdown)
            metrics_server.server_close()
