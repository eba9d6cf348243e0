"""Builds the application from a Config, runs the REST server and the background loops."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import tornado.netutil
import tornado.web

from .auth import Authenticator
from .broker.base import BrokerAdapter
from .broker.health import BrokerHealth
from .broker.null import NullBrokerAdapter
from .config import Config
from .deps import Deps
from .handlers.base import NotFoundHandler
from .handlers.connections import HTTPServer
from .handlers.routes import HANDLERS
from .loops.autoscale import Autoscaler
from .loops.base import LoopState, run_loop
from .loops.jobs import JobsLoop
from .loops.launch_control import LaunchControl
from .loops.mq_activation import MQActivation
from .loops.webhooks import WebhookDelivery
from .metrics import MeteredBroker, ServerMetrics
from .ops.fair_share import FairShare
from .progress_cache import ProgressCache
from .query_limits import QueryLimits
from .quotas import QuotaGate
from .schema import OpenAPI
from .storage import open_file_store, open_storage
from .storage.base import Storage
from .storage.checked import CheckedStorage
from .storage.collections import COLLECTIONS
from .webhooks.outbox import Notifier

LOGGER = logging.getLogger("ewms_server")


def make_broker(cfg: Config) -> BrokerAdapter:
    if not cfg.broker_url:
        return NullBrokerAdapter()
    from .broker.rabbitmq import RabbitMQBrokerAdapter, RabbitMQSettings

    return RabbitMQBrokerAdapter(RabbitMQSettings.from_env(cfg.env))


class PortInUse(Exception):
    """The REST port cannot be bound; the message names EWMS_REST_PORT."""


def bind(host: str, port: int) -> list[socket.socket]:
    try:
        return tornado.netutil.bind_sockets(port, host, family=socket.AF_INET)
    except OSError as e:
        raise PortInUse(
            f"cannot listen on {host}:{port}: {e.strerror or e} (set EWMS_REST_PORT to a free port, "
            "or stop the program holding it)"
        ) from None


ACCESS = logging.getLogger("tornado.access")
SLOW_REQUEST_S = 1.0
UNLIMITED_BODY = 1 << 62


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log: errors and slow requests always; fast successes only at DEBUG (a line per
    poll of every TMS would cost more than the poll, and state changes are logged with
    their subject by the handlers)."""
    status = handler.get_status()
    elapsed = handler.request.request_time()
    if status < 400 and elapsed < SLOW_REQUEST_S:
        if not ACCESS.isEnabledFor(logging.DEBUG):
            return
        level = logging.DEBUG
    else:
        level = logging.WARNING if status >= 400 else logging.INFO
    ACCESS.log(level, "%d %s %.2fms", status, handler._request_summary(), 1000 * elapsed)


def freeze_heap() -> None:
    """Once a server process has started: move every object it holds so far (modules, the
    schema, the app: ~40,000) out of the garbage collector's reach. A full collection then
    walks only what requests made since, so its pauses stay short (measured over full query
    pages on a shared machine: longest pause 60-260 ms before, 6-36 ms after). Process-wide: for `main`, not
    for a server embedded in another program's process."""
    gc.collect()
    gc.freeze()


def make_app(deps: Deps) -> tornado.web.Application:
    metrics = deps.metrics
    log_function = log_request
    if metrics is not None:

        def log_function(handler: tornado.web.RequestHandler) -> None:
            log_request(handler)
            metrics.observe_request(
                getattr(handler, "OPENAPI_PATH", ""),
                handler.request.method or "",
                handler.get_status(),
                handler.request.request_time(),
            )

    return tornado.web.Application(
        [(h.ROUTE, h, {"deps": deps}) for h in HANDLERS],
        default_handler_class=NotFoundHandler,
        default_handler_args={"deps": deps},
        compress_response=False,
        log_function=log_function,
    )


@dataclass
class Server:
    """One server process: `await start()`, then `await stop()`."""

    cfg: Config
    broker: BrokerAdapter | None = None
    storage: Storage | None = None
    """A driver built by the caller (tests: mongomock); else the one the config names."""
    port: int = 0
    deps: Deps = field(init=False)
    _http: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _activation: MQActivation | None = None
    _webhooks: WebhookDelivery | None = None

    async def start(self) -> None:
        """Raises PortInUse before anything else is opened when the port cannot be bound."""
        cfg = self.cfg
        sockets = bind(cfg.rest_host, cfg.rest_port)
        try:
            await self._start(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise

    async def _start(self, sockets: list[socket.socket]) -> None:
        cfg = self.cfg
        schema = OpenAPI()
        if self.storage is None:
            self.storage, where = open_storage(cfg)
            LOGGER.info("data: %s", where)
        store = CheckedStorage(self.storage, schema)
        try:
            version = await store.migrate()  # StoreTooNew: refuse to start (main exits 2)
        except BaseException:
            await store.close()
            raise
        LOGGER.info("store layout version %d", version)
        self.broker = self.broker or make_broker(cfg)
        metrics = ServerMetrics(store, cache_s=cfg.metrics_cache_s) if cfg.metrics_enabled else None
        broker: BrokerAdapter = MeteredBroker(self.broker, metrics) if metrics else self.broker
        loops = {
            "mq_activation": LoopState("mq_activation", cfg.loop_interval_s),
            "launch_control": LoopState("launch_control", cfg.loop_interval_s),
            "autoscale": LoopState("autoscale", cfg.autoscale.interval_s),
            "jobs": LoopState("jobs", cfg.loop_interval_s),
        }
        files = open_file_store(cfg, self.storage)
        notifier = None  # webhooks off: no events are recorded, and the state changes cost nothing more
        if cfg.webhooks.enabled:
            loops["webhooks"] = LoopState("webhooks", cfg.loop_interval_s)
            notifier = Notifier(store, wake=lambda: self.deps.wake("webhooks"))
        progress = ProgressCache(
            store, broker, ttl_s=cfg.progress_cache_s, window_s=cfg.progress_rate_window_s
        )
        self.deps = Deps(
            cfg=cfg,
            store=store,
            schema=schema,
            auth=Authenticator(cfg),
            loops=loops,
            query_fields={
                name: frozenset(schema.schemas[spec.component]["properties"])
                for name, spec in COLLECTIONS.items()
                if spec.queryable
            },
            quotas=QuotaGate(cfg.quotas),
            query_limits=QueryLimits(
                max_depth=cfg.query_max_depth,
                max_clauses=cfg.query_max_clauses,
                max_in_items=cfg.query_max_in_items,
                time_budget_s=cfg.query_time_budget_s,
            ),
            progress=progress,
            metrics=metrics,
            broker_health=BrokerHealth(broker, cfg.health_broker_cache_s) if cfg.broker_url else None,
            fair_share=FairShare(cfg.autoscale.share),
            notifier=notifier,
            files=files,
        )
        self._activation = activation = MQActivation(
            store,
            broker,
            wake_launch=self._queues_activated,
            wake_self=lambda: self.deps.wake("mq_activation"),
            delete_grace_s=cfg.broker_queue_delete_grace_s,
            revoke_max_wait_s=cfg.broker_revoke_max_wait_s,
            notifier=notifier,
        )
        launch = LaunchControl(
            store, cfg.orphan_age_s, sweep_interval_s=cfg.loop_interval_s, notifier=notifier
        )
        autoscaler = Autoscaler(
            store,
            progress.backlogs,
            cfg.autoscale,
            cfg.cluster_locations,
            wake_launch=lambda: self.deps.wake("launch_control"),
        )
        jobs = JobsLoop(store, files, broker, self._jobs_server_url, cfg.jobs_retention_s)
        passes = {
            "mq_activation": activation.one_pass,
            "launch_control": launch.one_pass,
            "autoscale": autoscaler.one_pass,
            "jobs": jobs.one_pass,
        }
        if notifier is not None:
            self._webhooks = WebhookDelivery(
                store, cfg.webhooks, notifier, progress, wake_self=lambda: self.deps.wake("webhooks")
            )
            passes["webhooks"] = self._webhooks.one_pass
        self._tasks = [
            asyncio.create_task(
                run_loop(loops[name], metrics.timed_pass(name, one) if metrics else one, self._stop)
            )
            for name, one in passes.items()
        ]
        self._http = HTTPServer(
            make_app(self.deps),
            # every handler streams its body and enforces its own route's limit with a JSON
            # 413 (handlers/base.py); tornado's own limit only answers a bare 400
            max_body_size=UNLIMITED_BODY,
            idle_connection_timeout=cfg.http_header_timeout_s,
            body_timeout=cfg.http_body_timeout_s,
            trusted_proxies=cfg.trusted_proxies,
            max_idle_connections=cfg.http_max_idle_connections,
        )
        self._http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        LOGGER.info("listening on http://%s:%d", cfg.rest_host, self.port)

    def _queues_activated(self) -> None:
        self.deps.wake("launch_control")
        self.deps.wake("jobs")  # a job's message goes out once its queues exist

    def _jobs_server_url(self) -> str:
        return self.cfg.jobs_server_url or f"http://{self.cfg.rest_host}:{self.port}"

    async def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.stop()
            try:
                await asyncio.wait_for(self._http.close_all_connections(), timeout)
            except TimeoutError:
                LOGGER.warning("connections still open after %.0f s; closing anyway", timeout)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for t in pending:
                t.cancel()
        await self._finish_broker_cleanups()
        if self._webhooks is not None:
            self._webhooks.close()
        if self.broker is not None:
            await self.broker.close()
        if self.deps.files is not None:
            await self.deps.files.close()
        await self.deps.store.close()

    async def _finish_broker_cleanups(self) -> None:
        """Ended workflows' broker users and vhosts, removed now rather than left behind
        (for at most EWMS_BROKER_CLEANUP_ON_STOP_S; what is left, later passes of mq_activation
        finish after the grace period)."""
        limit = self.cfg.broker_cleanup_on_stop_s
        if self._activation is None or not self.cfg.broker_url or limit <= 0:
            return
        try:
            n = await asyncio.wait_for(self._activation.retire_all_now(), limit)
        except TimeoutError:
            LOGGER.warning(
                "broker cleanup of ended workflows unfinished after %.0f s; the next start goes on", limit
            )
        except Exception as e:
            LOGGER.warning("broker cleanup of ended workflows failed at stop: %s: %s", type(e).__name__, e)
        else:
            if n:
                LOGGER.info("removed the broker objects of %d ended workflow(s) at stop", n)
