"""The autoscaling and fair-share settings (server settings, see `ewms-server --help`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AutoscaleSettings:
    interval_s: float = 5.0
    """Fallback pass interval: progress updates and statuses reports wake the loop earlier."""
    target_drain_s: float = 60.0
    """Size a task so its backlog drains in about this long at the measured rate per worker."""
    messages_per_worker: int = 50
    """Before a rate is measured: one worker per this many messages of backlog."""
    hold_down_s: float = 30.0
    """Scale in only after fewer workers were wanted for this long (scale out is at once)."""
    idle_timeout_s: float = 20.0
    """Pilots of taskforces the autoscaler adds stop after this long without a message."""
    user_max_workers: int = 0
    """Workers over all of one user's live taskforces (0 = no cap)."""
    user_shares: Mapping[str, float] = field(default_factory=dict)
    """Fair-share weight by user (absent: 1)."""
    location_max_workers: Mapping[str, int] = field(default_factory=dict)
    """Workers over all live taskforces at a cluster location (absent: no cap)."""

    def share(self, user: str) -> float:
        return self.user_shares.get(user, 1.0)

    def pilot_env(self) -> dict[str, str]:
        """Pilot environment defaults of autoscaled taskforces: idle workers end soon (the
        first-message wait too, so a worker that finds the queue already empty ends as soon)."""
        t = f"{self.idle_timeout_s:g}"
        return {
            "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": t,
            "EWMS_PILOT_TIMEOUT_QUEUE_WAIT_FOR_FIRST_MESSAGE": t,
        }

    @classmethod
    def from_settings(cls, get: Callable[[str], str | None]) -> AutoscaleSettings:
        """Raises ValueError naming the setting."""

        def number(name: str, minimum: float) -> float:
            raw = get(name)
            try:
                value = float(raw or "")
            except ValueError:
                raise ValueError(f"{name}: expected a number, got {raw!r}") from None
            if not value >= minimum:
                raise ValueError(f"{name}: must be >= {minimum}, got {raw!r}")
            return value

        user_max = number("EWMS_USER_MAX_WORKERS", 0)
        if user_max != int(user_max):
            raise ValueError(f"EWMS_USER_MAX_WORKERS: expected a whole number, got {user_max}")
        return cls(
            interval_s=number("EWMS_AUTOSCALE_INTERVAL_S", 0.1),
            target_drain_s=number("EWMS_AUTOSCALE_TARGET_DRAIN_S", 1),
            messages_per_worker=int(number("EWMS_AUTOSCALE_MESSAGES_PER_WORKER", 1)),
            hold_down_s=number("EWMS_AUTOSCALE_HOLD_DOWN_S", 0),
            idle_timeout_s=number("EWMS_AUTOSCALE_IDLE_TIMEOUT_S", 1),
            user_max_workers=int(user_max),
            user_shares=_json_map(get, "EWMS_USER_SHARES", "a positive number"),
            location_max_workers={
                k: int(v)
                for k, v in _json_map(get, "EWMS_LOCATION_MAX_WORKERS", "a whole number >= 0").items()
            },
        )


def _json_map(get: Callable[[str], str | None], name: str, what: str) -> dict[str, float]:
    """A JSON object of numbers: positive ones, or (`what` says "whole") whole numbers >= 0."""
    whole = "whole" in what
    raw = get(name) or "{}"
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{name}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a JSON object {{name: value}}")
    out = {}
    for key, value in data.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value >= 0 and value == int(value) if whole else value > 0)
        if not ok:
            raise ValueError(f"{name}: {key!r} must be {what}, got {value!r}")
        out[key] = float(value)
    return out


SETTING_NAMES = (
    "EWMS_AUTOSCALE_INTERVAL_S",
    "EWMS_AUTOSCALE_TARGET_DRAIN_S",
    "EWMS_AUTOSCALE_MESSAGES_PER_WORKER",
    "EWMS_AUTOSCALE_HOLD_DOWN_S",
    "EWMS_AUTOSCALE_IDLE_TIMEOUT_S",
    "EWMS_USER_MAX_WORKERS",
    "EWMS_USER_SHARES",
    "EWMS_LOCATION_MAX_WORKERS",
)
