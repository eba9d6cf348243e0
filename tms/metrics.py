"""Prometheus metrics of one TMS (prometheus_client), served on EWMS_TMS_METRICS_PORT when set."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from .tracking import Registry

LOGGER = logging.getLogger(__name__)
JOB_STATES = ("idle", "running", "held", "ended")


class TmsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.clusters = Gauge("ewms_tms_clusters", "Clusters this TMS watches.", registry=r)
        self.jobs = Gauge("ewms_tms_jobs", "Jobs of the watched clusters by state.", ["state"], registry=r)
        self.lag_bytes = Gauge(
            "ewms_tms_watcher_lag_bytes",
            "Bytes of the job event logs the watcher has not read yet.",
            registry=r,
        )
        self.lag_seconds = Gauge(
            "ewms_tms_watcher_lag_seconds",
            "Seconds since the watcher was last at the end of the log it is most behind on (0: caught up).",
            registry=r,
        )
        self.submits = Counter("ewms_tms_submits", "Clusters submitted.", registry=r)
        self.submit_failures = Counter(
            "ewms_tms_submit_failures", "Submits that failed (reported as failed submits).", registry=r
        )
        self.removes = Counter("ewms_tms_removes", "Clusters removed.", registry=r)
        self.remove_failures = Counter(
            "ewms_tms_remove_failures", "Removals that failed (reported as failed condor_rm).", registry=r
        )
        for state in JOB_STATES:
            self.jobs.labels(state)

    def observe_watch(self, registry: Registry, lag: tuple[int, float]) -> None:
        """After each watcher pass: what it watches, and how far behind its logs it is."""
        self.clusters.set(len(registry.by_uuid))
        jobs: Tally[str] = Tally()
        for t in registry.by_uuid.values():
            jobs.update(t.state.jobs_by_state())
        for state in JOB_STATES:
            self.jobs.labels(state).set(jobs[state])
        self.lag_bytes.set(lag[0])
        self.lag_seconds.set(lag[1])

    def serve(self, host: str, port: int) -> Any:
        """A small HTTP server (a thread of prometheus_client's) answering every path with the
        text exposition; returns the server, to shut it down."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        LOGGER.info("metrics on http://%s:%d/metrics", host, server.server_address[1])
        return server
