"""The shape every background loop shares: a pass, then sleep until woken, the interval, or stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

LOGGER = logging.getLogger("ewms_server.loops")


@dataclass
class LoopState:
    """Health of one loop, and the event that wakes it early."""

    name: str
    interval_s: float
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_pass_ts: float | None = None
    last_error: str | None = None
    n_passes: int = 0

    def healthy(self) -> bool:
        if self.last_error is not None:
            return False
        if self.last_pass_ts is None:
            return True  # not started its first pass yet
        return time.time() - self.last_pass_ts < max(3 * self.interval_s, 60)


async def run_loop(state: LoopState, one_pass: Callable[[], Awaitable[bool]], stop: asyncio.Event) -> None:
    """Run `one_pass` until `stop` is set. A pass returns True when it did work (then the next
    pass runs at once); exceptions are logged and retried with backoff, never fatal."""
    backoff = 0.0
    while not stop.is_set():
        state.wake.clear()
        busy = False
        try:
            busy = await one_pass()
            state.last_error = None
            backoff = 0.0
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a loop must survive anything a pass throws
            LOGGER.exception("loop %s: pass failed", state.name)
            state.last_error = f"{type(e).__name__}: {e}"
            backoff = min(max(backoff * 2, 0.5), state.interval_s)
        state.last_pass_ts = time.time()
        state.n_passes += 1
        if busy and not backoff:
            await asyncio.sleep(0)
            continue
        await _wait_any(state.wake, stop, backoff or state.interval_s)


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
