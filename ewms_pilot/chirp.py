"""Status reports into the job event log: `HTChirpEWMSPilot<Attr>: "<value>"` lines, rate-limited.

Values are escaped like ClassAd strings (backslash, double quote, `\\n`, `\\r`, `\\t`), so a line is
always one line with a closing quote; the value is cut so the line fits HTCondor's 1,023 chars.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

LOGGER = logging.getLogger(__name__)

MAX_LINE = 1023
PREFIX = "HTChirpEWMSPilot"


class PilotStatus(enum.StrEnum):
    STARTED = "Started"
    AWAITING_FIRST_MESSAGE = "AwaitingFirstMessage"
    TASKING = "Tasking"
    PENDING_REMAINING_TASKS = "PendingRemainingTasks"
    DONE = "Done"
    FATAL_ERROR = "FatalError"


def chirp_line(attr: str, value: object) -> str:
    """One well-formed line of at most MAX_LINE characters."""
    text = str(value)
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    escaped = "".join(c if c.isprintable() else "?" for c in escaped)
    head = f'{PREFIX}{attr}: "'
    room = MAX_LINE - len(head) - 1
    if len(escaped) > room:
        escaped = escaped[:room]
        trailing = len(escaped) - len(escaped.rstrip("\\"))
        if trailing % 2:  # do not leave half an escape before the closing quote
            escaped = escaped[:-1]
    return f'{head}{escaped}"'


class ChirpSink(Protocol):
    async def send(self, line: str) -> None: ...


class NullSink:
    async def send(self, line: str) -> None:
        return None


class FileSink:
    """Appends each line with one write (the local backend turns lines into ULog events)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def send(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode("utf-8", "replace"))

    def close(self) -> None:
        os.close(self._fd)


class CondorSink:
    """`condor_chirp ulog "<line>"`: one generic event in the job event log."""

    def __init__(self, program: str = "condor_chirp") -> None:
        self._program = program
        self._warned = False

    async def send(self, line: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._program,
                "ulog",
                line,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            failed = proc.returncode != 0
            reason = err.decode(errors="replace").strip()[:200]
        except (TimeoutError, OSError) as e:
            failed, reason = True, type(e).__name__
        if failed and not self._warned:  # chirping is best effort; say so once
            LOGGER.warning("condor_chirp failed (%s); further failures not logged", reason)
            self._warned = True


class Chirper:
    """Holds the reported attributes; sends changes at most every `interval` seconds."""

    def __init__(self, sink: ChirpSink, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._interval = interval
        self._clock = clock
        self._sent: dict[str, str] = {}
        self._current: dict[str, str] = {}
        self._last_flush: float | None = None
        self._lock = asyncio.Lock()

    def set(self, attr: str, value: object) -> None:
        self._current[attr] = str(value)

    def status(self, status: PilotStatus) -> None:
        self.set("Status", status.value)

    def counts(self, total: int, success: int, failed: int) -> None:
        self.set("TasksTotal", total)
        self.set("TasksSuccess", success)
        self.set("TasksFailed", failed)

    async def maybe_flush(self) -> None:
        """Send pending changes if the rate limit allows it."""
        if self._last_flush is None or self._clock() - self._last_flush >= self._interval:
            await self.flush()

    async def flush(self) -> None:
        """Send every changed attribute now (start and final status)."""
        async with self._lock:
            changed = {a: v for a, v in self._current.items() if self._sent.get(a) != v}
            self._last_flush = self._clock()
            if not changed:
                return
            # Status last: a reader seeing the new status has already seen its counts
            for attr in sorted(changed, key=lambda a: a == "Status"):
                await self._sink.send(chirp_line(attr, changed[attr]))
                self._sent[attr] = changed[attr]
            await self._sink.send(chirp_line("LastUpdatedTimestamp", int(time.time())))

    async def run(self, stop: asyncio.Event) -> None:
        """Flush pending changes every interval until `stop`."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), max(self._interval, 0.05))
            except TimeoutError:
                await self.maybe_flush()


def make_sink(mode: str, path: str | None) -> ChirpSink:
    if mode == "file":
        assert path
        return FileSink(path)
    if mode == "htcondor":
        return CondorSink()
    return NullSink()
