"""When a machine (or a whole location) is quarantined: the policy's settings and its verdict,
pure functions over failure and success counts (ops/quarantine.py feeds them from the store).

A black-hole machine fails every task within seconds: with the defaults it is caught at its
fifth failure, as long as nothing it ran succeeded. A machine that fails some tasks among
many successes is left alone (the failures are the tasks', not the machine's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ANY_MACHINE = "*"
"""The machine of an entry that pauses a whole location."""
FAILURE_KINDS = ("tasks_failed", "fatal", "held")
"""What counts against a machine: tasks its pilots failed, pilots in FatalError, jobs held.
Evictions and preemptions are reschedules and never counted."""

SETTING_NAMES = (
    "EWMS_QUARANTINE_WINDOW_S",
    "EWMS_QUARANTINE_THRESHOLD",
    "EWMS_QUARANTINE_FAILURE_RATIO",
    "EWMS_QUARANTINE_COOLDOWN_S",
)


@dataclass(frozen=True)
class QuarantinePolicy:
    window_s: float = 600.0
    """Failures and successes of the last window_s seconds are weighed."""
    threshold: int = 5
    """Fewest failures in the window that quarantine a machine (0: never automatically)."""
    failure_ratio: float = 0.9
    """...and at least this share of its outcomes in the window are failures."""
    cooldown_s: float = 3600.0
    """How long an automatic entry lasts."""

    @classmethod
    def from_settings(cls, get: Callable[[str], str | None]) -> QuarantinePolicy:
        """Raises ValueError naming the setting."""
        parsed: list[float] = []
        for name, default, kind, low, high in (
            (SETTING_NAMES[0], cls.window_s, float, 1.0, 30 * 86400.0),
            (SETTING_NAMES[1], cls.threshold, int, 0, 1_000_000),
            (SETTING_NAMES[2], cls.failure_ratio, float, 0.0, 1.0),
            (SETTING_NAMES[3], cls.cooldown_s, float, 1.0, 365 * 86400.0),
        ):
            raw = get(name)
            try:
                value = kind(raw) if raw not in (None, "") else default
            except ValueError:
                raise ValueError(f"{name}: expected a {kind.__name__}, got {raw!r}") from None
            if not low <= value <= high:
                raise ValueError(f"{name}: must be {low}-{high}, got {value}")
            parsed.append(value)
        return cls(parsed[0], int(parsed[1]), parsed[2], parsed[3])

    def verdict(self, failures: int, successes: int) -> bool:
        """Quarantine? Enough failures in the window, and almost nothing else."""
        if self.threshold <= 0 or failures < self.threshold:
            return False
        return failures >= self.failure_ratio * (failures + successes)

    def reason(self, failures: int, successes: int, what: str = "tasks, pilots or jobs") -> str:
        return (
            f"{failures} failures ({what}) and {successes} successes in the last "
            f"{self.window_s:g} s (threshold {self.threshold}, ratio {self.failure_ratio:g})"
        )


def failures_of(counts: dict[str, int]) -> int:
    return sum(int(counts.get(k, 0)) for k in FAILURE_KINDS)
