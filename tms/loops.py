"""One loop runner for every TMS loop, with one error policy.

A loop is a pass (``async () -> bool``, True when it did work and should run again at
once) repeated until ``stop`` is set. Known transient errors (server refusals, backend and
file-system errors) are logged in one line and backed off; anything else is a bug, logged
with its traceback the first time and then as a rate-limited line, and backed off too. One
loop's exception never stops another. A refused token (AuthRejected) is fatal: every loop
stops and ``run_all`` returns why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from .backends.base import BackendError
from .client import AuthRejected, ServerRejected, Stopped

LOGGER = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (ServerRejected, BackendError, OSError, TimeoutError)

Pass = Callable[[], Awaitable[bool]]


@dataclasses.dataclass
class LoopState:
    """One loop: its wait between idle passes, and what it has done so far."""

    name: str
    interval: float | Callable[[], float]
    n_passes: int = 0
    n_errors: int = 0
    backoff: float = 0.0
    last_error: str | None = None

    def wait_s(self) -> float:
        return self.interval() if callable(self.interval) else self.interval


class ErrorLog:
    """Each distinct error: logged in full once, then at most once per ``every`` seconds."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._seen: dict[tuple[str, str, str], tuple[float, int]] = {}  # -> (last logged, n since)

    def log(self, loop: str, exc: BaseException, *, bug: bool) -> None:
        key = (loop, type(exc).__name__, str(exc)[:200])
        now = time.monotonic()
        last = self._seen.get(key)
        if last is None:
            self._seen[key] = (now, 0)
            if bug:
                LOGGER.error("loop %s: unexpected error (a bug); retrying", loop, exc_info=exc)
            else:
                LOGGER.warning("loop %s: %s: %s; retrying", loop, type(exc).__name__, exc)
            return
        logged_at, n = last
        if now - logged_at < self.every:
            self._seen[key] = (logged_at, n + 1)
            return
        self._seen[key] = (now, 0)
        LOGGER.log(
            logging.ERROR if bug else logging.WARNING,
            "loop %s: %s: %s (%d time(s) since last logged)",
            loop,
            type(exc).__name__,
            exc,
            n + 1,
        )


async def _wait(stop: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=timeout)
    except TimeoutError:
        pass


async def run_loop(
    state: LoopState,
    one_pass: Pass,
    stop: asyncio.Event,
    errors: ErrorLog,
    *,
    backoff_min: float = 0.5,
    backoff_max: float = 60.0,
) -> None:
    """Passes until ``stop``; raises only AuthRejected (and cancellation)."""
    while not stop.is_set():
        busy = False
        try:
            busy = await one_pass()
        except Stopped:
            return
        except AuthRejected:
            raise
        except Exception as e:  # the policy: log, back off, go on
            state.n_errors += 1
            state.last_error = f"{type(e).__name__}: {e}"
            errors.log(state.name, e, bug=not isinstance(e, TRANSIENT))
            state.backoff = min(max(state.backoff * 2, backoff_min), backoff_max)
        else:
            state.backoff = 0.0
            state.last_error = None
        state.n_passes += 1
        if busy and not state.backoff:
            await asyncio.sleep(0)  # let the other loops run
            continue
        await _wait(stop, state.backoff or state.wait_s())


async def run_all(
    loops: list[tuple[LoopState, Pass]],
    stop: asyncio.Event,
    *,
    backoff_min: float = 0.5,
    backoff_max: float = 60.0,
    errors: ErrorLog | None = None,
) -> str | None:
    """Run every loop until ``stop`` is set; returns the reason when a refused token ended them."""
    errors = errors or ErrorLog()
    fatal: list[str] = []

    async def guarded(state: LoopState, one_pass: Pass) -> None:
        try:
            await run_loop(state, one_pass, stop, errors, backoff_min=backoff_min, backoff_max=backoff_max)
        except AuthRejected as e:
            fatal.append(f"the server refused EWMS_TMS_TOKEN ({e.status}) in loop {state.name}: {e}")
            stop.set()

    async with asyncio.TaskGroup() as tg:
        for state, one_pass in loops:
            tg.create_task(guarded(state, one_pass), name=f"tms-loop-{state.name}")
    return fatal[0] if fatal else None
