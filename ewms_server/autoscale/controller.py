"""The autoscaling controller: from one task's backlog, measured rate and caps to a worker count.

Pure functions over values (no store, no clock, no broker), so a simulation can drive them
(tests/server/test_autoscale_controller.py). Two steps:

- `wanted`: what the backlog calls for, within the task's [min_workers, max_workers]:
  backlog / (rate per worker x target drain time), never more than the backlog itself; with no
  measured rate yet (nothing finished), one worker per `messages_per_worker` of backlog, or
  twice the running workers when more (as queue-length scalers do), so a burst is answered at
  the first decision and the rate takes over once measured.
- `decide`: that, clamped by the caps (per-user, per-location, fair share), against the
  workers the task holds: more is acted on at once; fewer only once fewer were wanted for the
  whole hold-down time (and a rise in between cancels it), so the count does not flap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    SCALE_OUT = "scale-out"
    """Add taskforces for (target - current) workers."""
    SCALE_IN = "scale-in"
    """Stop surplus taskforces that run nothing; idle pilots end by their idle timeout."""
    HOLD = "hold"
    """Change nothing."""


@dataclass(frozen=True)
class Observation:
    """What launch control knows of one task at one moment."""

    pending: int | None
    """Ready messages in its input queues (None: no broker figures)."""
    in_flight: int | None
    """Delivered, unacknowledged messages (tasks running)."""
    rate_per_worker: float | None
    """Tasks succeeded per second per running worker (None: not measured yet)."""
    running: int
    """Its jobs HTCondor reports running."""
    current: int
    """Workers it holds: jobs not ended, and those of taskforces not submitted yet."""
    stale: bool = False
    """The queue figures have not changed since the task held more workers: the broker's
    statistics (refreshed every few seconds) may predate those workers ending, by their idle
    timeout, on a queue that was empty."""

    @property
    def backlog(self) -> int | None:
        if self.pending is None or self.in_flight is None:
            return None
        return self.pending + self.in_flight


@dataclass(frozen=True)
class Bounds:
    min_workers: int
    max_workers: int

    def clamp(self, n: int) -> int:
        return max(self.min_workers, min(self.max_workers, n))


@dataclass(frozen=True)
class Want:
    workers: int
    reason: str


def wanted(obs: Observation, bounds: Bounds, target_drain_s: float, messages_per_worker: int) -> Want:
    backlog = obs.backlog
    if backlog is None:
        return Want(bounds.clamp(obs.current), "no queue figures from the broker: keep the current count")
    if backlog == 0:
        return Want(bounds.min_workers, "backlog empty")
    if obs.stale:
        return Want(
            bounds.clamp(obs.current),
            f"backlog {backlog} is the figure seen while more workers ran, and some ended since "
            "(idle: the queue may be empty): keep the count until the broker's next statistics",
        )
    if obs.rate_per_worker:
        need = math.ceil(backlog / (obs.rate_per_worker * target_drain_s))
        why = f"backlog {backlog} / ({obs.rate_per_worker:.3g}/s per worker x {target_drain_s:g} s)"
    else:
        need = max(1, math.ceil(backlog / messages_per_worker), 2 * obs.running)
        why = f"backlog {backlog}, no rate measured yet: 1 per {messages_per_worker} messages, or 2 x {obs.running} running"
    need = min(need, backlog)
    n = bounds.clamp(need)
    if n != need:
        why += f"; clamped to [{bounds.min_workers}, {bounds.max_workers}]"
    return Want(n, why)


@dataclass(frozen=True)
class Decision:
    """One decision and its reason: what GET /v1/task-directives/{id} shows in `autoscale`."""

    ts: float
    action: Action
    current: int
    desired: int
    """What the backlog calls for (within min/max), before the caps."""
    target: int
    """What the caps allow of it: the count the action moves toward."""
    cap: int | None
    """The binding cap (None: none binds)."""
    cap_reason: str | None
    pending: int | None
    in_flight: int | None
    rate_per_worker: float | None
    running: int
    reason: str

    def as_doc(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Action) else v) for k, v in vars(self).items()}


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    low_since: float | None
    """Since when fewer workers than held were wanted (carried to the next decision)."""


def decide(
    obs: Observation,
    want: Want,
    *,
    cap: int | None,
    cap_reason: str | None,
    low_since: float | None,
    now: float,
    hold_down_s: float,
) -> Outcome:
    target = want.workers if cap is None else min(want.workers, cap)
    binding = cap if cap is not None and cap < want.workers else None
    reason = want.reason

    def out(action: Action, why: str, since: float | None) -> Outcome:
        d = Decision(
            ts=now,
            action=action,
            current=obs.current,
            desired=want.workers,
            target=target,
            cap=binding,
            cap_reason=cap_reason if binding is not None else None,
            pending=obs.pending,
            in_flight=obs.in_flight,
            rate_per_worker=obs.rate_per_worker,
            running=obs.running,
            reason=why,
        )
        return Outcome(d, since)

    if target > obs.current:
        return out(Action.SCALE_OUT, reason, None)
    if target == obs.current:
        return out(Action.HOLD, reason, None)
    since = now if low_since is None else low_since
    if now - since >= hold_down_s:
        return out(Action.SCALE_IN, f"{reason}; fewer wanted for {now - since:.0f} s", since)
    return out(Action.HOLD, f"{reason}; fewer wanted, waiting out the {hold_down_s:g} s hold-down", since)
