"""One connected stretch of the pilot: consume, run tasks concurrently, publish, ack; then drain.

Failure policy: a failed task (non-zero exit, timeout, no output, an output the message format
cannot carry) is nacked with requeue and counted and chirped as failed. The queue is a quorum
queue with a delivery limit (see `ewms_server.broker.rabbitmq`): after that many returns the
broker moves the message to `<mqid>.dead-letter`, so a poison message is neither retried forever
nor silently dropped. A message that is not in the workflow's format (`ewms_pilot.envelope`)
goes there at once: no retry would make it readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .broker import BrokerLost, BrokerRefused, BrokerSession, Delivery
from .chirp import PilotStatus
from .config import PilotConfig
from .envelope import MessageFormatError, unwrap, wrap
from .runner import Runner, TaskFailed

LOGGER = logging.getLogger(__name__)


@dataclass
class Counts:
    total: int = 0
    success: int = 0
    failed: int = 0


class StopReason:
    STOP = "stop requested"
    IDLE = "idle timeout"


class Consumer:
    """Serves the sessions until stop, idle timeout, or a broken session (raised)."""

    def __init__(
        self,
        cfg: PilotConfig,
        runner: Runner,
        sessions: dict[str, BrokerSession],
        counts: Counts,
        stop: asyncio.Event,
        set_status: Callable[[PilotStatus], None],
        on_task_done: Callable[[str | None], None],
        got_first_message: bool,
    ) -> None:
        self.cfg = cfg
        self.runner = runner
        self.sessions = sessions  # by mqid
        self.counts = counts
        self.stop = stop
        self.set_status = set_status
        self.on_task_done = on_task_done
        self.got_first_message = got_first_message
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self.in_flight = 0
        self.last_activity = time.monotonic()

    async def serve(self) -> str:
        """Return why it stopped; raise BrokerLost / BrokerRefused if a session broke."""
        for mqid in self.cfg.queues_in:
            await self.sessions[mqid].consume(mqid, self._received)
        LOGGER.info("consuming from %s", ", ".join(self.cfg.queues_in))
        workers = [asyncio.create_task(self._work()) for _ in range(self.cfg.max_concurrent_tasks)]
        broken = {s.failed for s in self.sessions.values()}
        stop_wait = asyncio.create_task(self.stop.wait())
        try:
            while True:
                timeout = self._idle_left()
                if timeout <= 0:
                    LOGGER.info("no message for %.0f s: stopping", self._idle_limit())
                    await self._drain(workers, return_unstarted=False, grace=None)
                    return StopReason.IDLE
                waiting: set[asyncio.Future[Any]] = {stop_wait, *broken, *workers}
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for fut in done & broken:
                    fut.result()  # raises the session's failure
                for w in done & set(workers):
                    w.result()  # a worker only ends by a bug: surface it
                if stop_wait in done:
                    LOGGER.info("stop requested: returning queued messages, finishing tasks")
                    await self._drain(workers, return_unstarted=True, grace=self.cfg.stop_grace)
                    return StopReason.STOP
        finally:
            stop_wait.cancel()
            await _cancel(workers)

    # -- internals ------------------------------------------------------------------------

    def _received(self, d: Delivery) -> None:
        self.last_activity = time.monotonic()
        if not self.got_first_message:
            self.got_first_message = True
            self.set_status(PilotStatus.TASKING)
        self.inbox.put_nowait(d)

    def _idle_limit(self) -> float:
        return self.cfg.timeout_incoming if self.got_first_message else self.cfg.timeout_first_message

    def _idle_left(self) -> float:
        if self.in_flight or not self.inbox.empty():
            return max(self._idle_limit(), 0.05)
        return self.last_activity + self._idle_limit() - time.monotonic()

    async def _work(self) -> None:
        while True:
            d = await self.inbox.get()
            self.in_flight += 1
            try:
                await self._handle(d)
            finally:
                self.in_flight -= 1
                self.last_activity = time.monotonic()

    async def _handle(self, d: Delivery) -> None:
        self.counts.total += 1
        fmt = self.cfg.message_format
        try:
            body = unwrap(d.body, fmt)
        except MessageFormatError as e:
            self.counts.failed += 1
            LOGGER.warning("unreadable message, dead-lettered: %s", e)
            d.session.nack(d, requeue=False)  # to <mqid>.dead-letter by the queue's policy
            self.on_task_done(f"unreadable message: {e}")
            return
        try:
            output = await self.runner.run_task(self.cfg.task, body, self.cfg.task_timeout)
            payload = _wrap_output(output, fmt)
        except TaskFailed as e:
            self.counts.failed += 1
            LOGGER.warning("task failed (delivery %d of this message): %s", d.delivery_count + 1, e)
            d.session.nack(d, requeue=True)
            self.on_task_done(str(e))
            return
        except asyncio.CancelledError:
            self.counts.total -= 1  # not a task outcome: the message goes back
            d.session.nack(d, requeue=True)
            raise
        try:
            for mqid in self.cfg.queues_out:
                await self.sessions[mqid].publish(mqid, payload, {})
        except (BrokerLost, BrokerRefused) as e:
            # not the task's fault: the input goes back (or is returned with the broken channel)
            self.counts.total -= 1
            LOGGER.warning("could not publish a result (%s); returning its message", e)
            d.session.nack(d, requeue=True)
            return
        if d.session.ack(d):
            self.counts.success += 1
            self.on_task_done(None)
        else:
            self.counts.total -= 1  # the broker requeued it with the lost channel

    async def _drain(
        self, workers: list[asyncio.Task[None]], *, return_unstarted: bool, grace: float | None
    ) -> None:
        for session in set(self.sessions.values()):
            with contextlib.suppress(BrokerLost, BrokerRefused):
                await session.cancel_consumers()
        if return_unstarted:
            while not self.inbox.empty():
                d = self.inbox.get_nowait()
                d.session.nack(d, requeue=True)
        if self.in_flight or not self.inbox.empty():
            self.set_status(PilotStatus.PENDING_REMAINING_TASKS)
        deadline = None if grace is None else time.monotonic() + grace
        while self.in_flight or not self.inbox.empty():
            if deadline is not None and time.monotonic() >= deadline:
                LOGGER.warning(
                    "stop grace over: killing %d task(s), returning their messages", self.in_flight
                )
                break
            if any(s.failed.done() for s in self.sessions.values()):
                break  # unsettled messages went back with the connection
            await asyncio.sleep(0.05)
        await _cancel(workers)


def _wrap_output(output: bytes, fmt: str) -> bytes:
    try:
        return wrap(output, fmt)
    except MessageFormatError as e:
        raise TaskFailed(f"the task's output {e}") from None


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t
