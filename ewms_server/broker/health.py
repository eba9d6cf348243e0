"""The broker's part of /v1/health: one check at a time, its answer reused for a few seconds,
so health stays cheap however often load balancers and monitors ask."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from .base import BrokerAdapter

CHECK_TIMEOUT_S = 5.0


@dataclass
class BrokerHealth:
    broker: BrokerAdapter
    cache_s: float
    _checked: float = -math.inf
    _problem: str | None = None
    _running: asyncio.Task[str | None] | None = field(default=None, repr=False)

    async def problem(self) -> str | None:
        """None when the broker is fine; else what is wrong (at most `cache_s` old)."""
        if time.monotonic() - self._checked < self.cache_s:
            return self._problem
        if self._running is None:  # callers arriving meanwhile share this one check
            self._running = asyncio.create_task(self._check())
        return await asyncio.shield(self._running)

    async def _check(self) -> str | None:
        try:
            problem = await asyncio.wait_for(self.broker.health(), CHECK_TIMEOUT_S)
        except TimeoutError:
            problem = f"the broker did not answer a health check within {CHECK_TIMEOUT_S:.0f} s"
        except Exception as e:  # any failure to ask is "unhealthy"; the text names its kind only
            problem = f"broker health check failed: {type(e).__name__}"
        finally:
            self._running = None
        self._checked, self._problem = time.monotonic(), problem
        return problem
