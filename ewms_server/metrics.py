"""Prometheus metrics of one server process (prometheus_client, a registry of its own).

Request durations are labelled by route *template* (the handler's OPENAPI_PATH), never by the
raw path, so ids never become label values. Workflow and taskforce counts come from the store
as indexed group-by counts (`Storage.count_by`), reused for EWMS_METRICS_CACHE_S.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from .broker.base import BrokerAdapter, QueueAccess, QueueDepth, QueuesMissing
from .storage.base import Storage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACTIVE = "active"
"""The `state` of a workflow that has not ended (else ABORTED or FINISHED)."""
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PASS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)


class _StoreCounts:
    """A collector serving the last counts taken from the store."""

    def __init__(self) -> None:
        self.workflows: dict[tuple[Any, ...], int] = {}
        self.taskforces: dict[tuple[Any, ...], int] = {}

    def collect(self) -> Iterator[Metric]:
        wf = GaugeMetricFamily(
            "ewms_workflows", "Workflows by state (active, ABORTED, FINISHED).", labels=["state"]
        )
        for (state,), n in sorted(self.workflows.items(), key=lambda kv: str(kv[0])):
            wf.add_metric([ACTIVE if state is None else str(state)], n)
        yield wf
        tf = GaugeMetricFamily(
            "ewms_taskforces", "Taskforces by phase and schedd.", labels=["phase", "schedd"]
        )
        for (phase, schedd), n in sorted(self.taskforces.items(), key=lambda kv: str(kv[0])):
            tf.add_metric([str(phase), str(schedd)], n)
        yield tf


class ServerMetrics:
    def __init__(self, store: Storage, *, cache_s: float) -> None:
        self.store = store
        self.cache_s = cache_s
        self.registry = CollectorRegistry(auto_describe=False)
        self.http = Histogram(
            "ewms_http_request_duration_seconds",
            "REST request durations by route template, method and status.",
            ["route", "method", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.loop_pass = Histogram(
            "ewms_loop_pass_duration_seconds",
            "Durations of the background loops' passes.",
            ["loop"],
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.loop_errors = Counter(
            "ewms_loop_errors", "Background loop passes that failed.", ["loop"], registry=self.registry
        )
        self.broker_calls = Counter(
            "ewms_broker_calls", "Calls to the broker adapter, by method.", ["method"], registry=self.registry
        )
        self.broker_failures = Counter(
            "ewms_broker_failures",
            "Broker adapter calls that failed (broker unavailable or refused), by method.",
            ["method"],
            registry=self.registry,
        )
        self.tasks = Counter(
            "ewms_tasks",
            "Tasks the pilots reported done, by outcome (succeeded, failed), as the TMS reports reach this server.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("succeeded", "failed"):
            self.tasks.labels(outcome)
        self._counts = _StoreCounts()
        self.registry.register(self._counts)
        self._counted_at = -float("inf")
        self._lock = asyncio.Lock()

    # -- observations --------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http.labels(route or "unmatched", method, str(status)).observe(seconds)

    def add_tasks(self, outcome: str, n: int) -> None:
        if n > 0:
            self.tasks.labels(outcome).inc(n)

    def timed_pass(self, loop: str, one_pass: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        """`one_pass`, timed and its failures counted (it still raises them)."""
        histogram, errors = self.loop_pass.labels(loop), self.loop_errors.labels(loop)

        async def timed() -> bool:
            start = time.perf_counter()
            try:
                return await one_pass()
            except Exception:
                errors.inc()
                raise
            finally:
                histogram.observe(time.perf_counter() - start)

        return timed

    # -- the scrape ----------------------------------------------------------------------

    async def refresh_counts(self) -> None:
        async with self._lock:  # concurrent scrapes share one count
            if time.monotonic() - self._counted_at < self.cache_s:
                return
            self._counts.workflows = await self.store.count_by("workflows", ["deactivated"], {})
            self._counts.taskforces = await self.store.count_by("taskforces", ["phase", "schedd"], {})
            self._counted_at = time.monotonic()

    async def render(self) -> bytes:
        await self.refresh_counts()
        return generate_latest(self.registry)


class MeteredBroker:
    """A broker adapter whose calls and failures are counted (QueuesMissing is an answer, not
    a failure)."""

    def __init__(self, inner: BrokerAdapter, metrics: ServerMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    async def _call(self, method: str, call: Awaitable[Any]) -> Any:
        self.metrics.broker_calls.labels(method).inc()
        try:
            return await call
        except QueuesMissing:
            raise
        except Exception:
            self.metrics.broker_failures.labels(method).inc()
            raise

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        return await self._call("activate_workflow", self.inner.activate_workflow(workflow_id, mqids))

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        await self._call("deactivate_workflow", self.inner.deactivate_workflow(workflow_id, mqids))

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        await self._call("delete_queues", self.inner.delete_queues(workflow_id, mqids))

    async def queue_depths(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueDepth]:
        return await self._call("queue_depths", self.inner.queue_depths(workflow_id, mqids))

    async def requeue_dead_letters(self, workflow_id: str, mqids: list[str], limit: int) -> int:
        return await self._call(
            "requeue_dead_letters", self.inner.requeue_dead_letters(workflow_id, mqids, limit)
        )

    async def publish(self, workflow_id: str, mqid: str, payload: bytes) -> None:
        await self._call("publish", self.inner.publish(workflow_id, mqid, payload))

    async def health(self) -> str | None:
        return await self.inner.health()

    async def close(self) -> None:
        await self.inner.close()
