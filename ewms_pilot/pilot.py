"""The pilot's life cycle: chirp Started, run the init command, connect (and reconnect), consume,
and always chirp a final Done or FatalError."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import traceback

from . import chirp
from .broker import BrokerLost, BrokerRefused, BrokerSession, connection_url
from .chirp import Chirper, PilotStatus
from .config import PilotConfig, QueueAuth
from .consumer import Consumer, Counts, StopReason
from .job_runner import JobRunner
from .runner import Runner, TaskFailed
from .secrets import SecretsError, SecretsFetch, fetch_secrets, task_variables
from .warm_runner import WarmRunner

LOGGER = logging.getLogger(__name__)

SUPPORTED_BROKERS = ("rabbitmq",)


class FatalError(Exception):
    """The pilot cannot go on; reported as FatalError."""


class Pilot:
    def __init__(
        self,
        cfg: PilotConfig,
        auth: dict[str, QueueAuth],
        chirper: Chirper,
        stop: asyncio.Event,
        secrets_fetch: SecretsFetch | None = None,
    ) -> None:
        self.cfg = cfg
        self.secrets_fetch = secrets_fetch
        self.chirper = chirper
        self.stop = stop
        self.runner: Runner = (
            WarmRunner(cfg.runner, cfg.work_dir, cfg.warm_start_timeout)
            if cfg.task_mode == "warm"
            else JobRunner(cfg.runner, cfg.work_dir)
            if cfg.task_mode == "job"
            else Runner(cfg.runner, cfg.work_dir)
        )
        self.counts = Counts()
        self.got_first_message = False
        for mqid, a in auth.items():
            if a.broker_type not in SUPPORTED_BROKERS:
                raise FatalError(f"queue {mqid}: unsupported broker_type {a.broker_type!r}")
        self._urls = {m: connection_url(a.broker_address, a.auth_token) for m, a in auth.items()}

    async def run(self) -> int:
        """0 when done (idle, stopped), 1 on a fatal error."""
        self.chirper.status(PilotStatus.STARTED)
        self.chirper.set("StartedTimestamp", int(time.time()))
        await self.chirper.flush()
        chirp_stop = asyncio.Event()
        chirp_loop = asyncio.create_task(self.chirper.run(chirp_stop))
        final, code = PilotStatus.DONE, 0
        try:
            if self.secrets_fetch is not None:
                await self._fetch_secrets(self.secrets_fetch)
            if self.cfg.init is not None and not self.stop.is_set():
                LOGGER.info("running the init command")
                try:
                    await self.runner.run_init(self.cfg.init, self.cfg.init_timeout)
                except TaskFailed as e:
                    raise FatalError(f"init command failed: {e}") from None
            self.chirper.status(PilotStatus.AWAITING_FIRST_MESSAGE)
            await self._consume()
        except FatalError as e:
            LOGGER.error("fatal: %s", e)
            final, code = PilotStatus.FATAL_ERROR, 1
            self.chirper.set("Error", str(e))
        except Exception as e:  # a bug: report it with its traceback, then exit non-zero
            LOGGER.exception("fatal: unexpected error")
            final, code = PilotStatus.FATAL_ERROR, 1
            self.chirper.set("Error", f"{type(e).__name__}: {e}")
            self.chirper.set("ErrorTraceback", traceback.format_exc())
        finally:
            await self.runner.close()  # warm workers end with the pilot
            chirp_stop.set()
            await chirp_loop
            self._chirp_counts()
            self.chirper.status(final)
            await self.chirper.flush()
        LOGGER.info(
            "pilot %s: %d task(s), %d succeeded, %d failed",
            final.value,
            self.counts.total,
            self.counts.success,
            self.counts.failed,
        )
        return code

    async def _fetch_secrets(self, fetch: SecretsFetch) -> None:
        """The task's secrets, into its command only (names are logged, values never)."""
        try:
            values = await fetch_secrets(fetch, self.cfg.reconnect_timeout, self.stop)
        except SecretsError as e:
            raise FatalError(str(e)) from None
        if values is None:  # stopped while waiting for the server
            return
        task = dataclasses.replace(self.cfg.task, secrets=task_variables(values))
        self.cfg = dataclasses.replace(self.cfg, task=task)
        LOGGER.info("fetched the task's secrets: %s", ", ".join(sorted(values)) or "(none)")

    async def _consume(self) -> None:
        while not self.stop.is_set():
            sessions = await self._connect()
            if sessions is None:
                return
            consumer = Consumer(
                self.cfg,
                self.runner,
                sessions,
                self.counts,
                self.stop,
                set_status=self.chirper.status,
                on_task_done=self._task_done,
                got_first_message=self.got_first_message,
            )
            try:
                reason = await consumer.serve()
                LOGGER.info("stopping: %s", reason)
                if reason in (StopReason.IDLE, StopReason.STOP):
                    return
            except BrokerRefused as e:
                raise FatalError(str(e)) from None
            except BrokerLost as e:
                LOGGER.warning("broker connection lost (%s): reconnecting", e)
                self.chirper.set("Error", f"broker connection lost: {e}")
            finally:
                self.got_first_message = consumer.got_first_message
                for s in set(sessions.values()):
                    await s.close()

    async def _connect(self) -> dict[str, BrokerSession] | None:
        """Sessions by mqid (one per distinct URL); None if stopped while waiting."""
        deadline = time.monotonic() + self.cfg.reconnect_timeout
        delay = 0.25
        while True:
            by_url: dict[str, BrokerSession] = {}
            try:
                for url in dict.fromkeys(self._urls.values()):
                    by_url[url] = BrokerSession(url)
                    await by_url[url].open(self.cfg.prefetch)
                return {m: by_url[u] for m, u in self._urls.items()}
            except BrokerRefused as e:
                raise FatalError(str(e)) from None
            except BrokerLost as e:
                for s in by_url.values():
                    await s.close()
                if time.monotonic() + delay > deadline:
                    raise FatalError(
                        f"broker unreachable for {self.cfg.reconnect_timeout:g} s: {e}"
                    ) from None
                LOGGER.warning("%s; retrying in %.1f s", e, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            if self.stop.is_set():
                return None
            delay = min(delay * 2, 5.0)

    def _task_done(self, error: str | None) -> None:
        self._chirp_counts()
        if error is not None:
            self.chirper.set("Error", error)

    def _chirp_counts(self) -> None:
        c = self.counts
        self.chirper.counts(c.total, c.success, c.failed)


def make_chirper(cfg: PilotConfig) -> Chirper:
    return Chirper(chirp.make_sink(cfg.chirp, cfg.chirp_file), cfg.chirp_interval)
