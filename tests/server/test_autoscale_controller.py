"""The autoscaling controller alone, simulated over synthetic backlogs: no processes, no store.

A second-by-second model of a task: workers start `STARTUP_S` after they are asked for, each
running worker does `RATE` tasks per second, and an idle worker ends after `IDLE_S` (workers
not started yet are what a scale-in can stop). The rate the controller sees is the true one
with seeded noise of +-25 %, and only once a worker runs. Over a step, a ramp, bursts and no
backlog at all, the worker count must change direction only a bounded number of times and
never overshoot what the backlog calls for by much.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ewms_server.autoscale.controller import Action, Bounds, Observation, Want, decide, wanted
from ewms_server.autoscale.share import Demand, Grant, allocate

RATE = 2.0  # tasks per second per running worker
STARTUP_S = 3
IDLE_S = 10
DRAIN_S = 30.0
HOLD_DOWN_S = 20.0
PER_WORKER = 50


@dataclass
class Worker:
    starts: int
    idle_for: int = 0


@dataclass
class Run:
    held: list[int] = field(default_factory=list)
    ideal: list[int] = field(default_factory=list)
    decisions: list[Action] = field(default_factory=list)
    done: int = 0
    first_out: int | None = None


def simulate(
    arrivals: Callable[[int], int], *, steps: int, bounds: Bounds, cap: int | None = None, seed: int = 1
) -> Run:
    rnd = random.Random(seed)
    backlog = 0.0
    workers: list[Worker] = []
    low_since: float | None = None
    run = Run()
    for t in range(steps):
        backlog += arrivals(t)
        running = [w for w in workers if w.starts <= t]
        in_flight = min(len(running), math.ceil(backlog))
        measured = RATE * rnd.uniform(0.75, 1.25) if running else None
        obs = Observation(
            pending=math.ceil(backlog) - in_flight,
            in_flight=in_flight,
            rate_per_worker=measured,
            running=len(running),
            current=len(workers),
        )
        want = wanted(obs, bounds, DRAIN_S, PER_WORKER)
        out = decide(
            obs, want, cap=cap, cap_reason="cap", low_since=low_since, now=float(t), hold_down_s=HOLD_DOWN_S
        )
        low_since, d = out.low_since, out.decision
        run.decisions.append(d.action)
        if d.action == Action.SCALE_OUT:
            workers += [Worker(starts=t + STARTUP_S) for _ in range(d.target - d.current)]
            if run.first_out is None:
                run.first_out = t
        elif d.action == Action.SCALE_IN:  # only workers not started yet can be stopped
            for w in sorted((w for w in workers if w.starts > t), key=lambda w: -w.starts)[
                : d.current - d.target
            ]:
                workers.remove(w)
        # one second of work; idle workers time out
        work = min(backlog, RATE * len(running))
        backlog -= work
        run.done += round(work) if backlog == 0 else int(work)
        for w in running:  # a worker that got no message this second idles
            w.idle_for = w.idle_for + 1 if work == 0 else 0
        workers = [w for w in workers if w.idle_for < IDLE_S]
        run.held.append(len(workers))
        ideal = bounds.clamp(math.ceil(obs.backlog / (RATE * DRAIN_S))) if obs.backlog else bounds.min_workers
        run.ideal.append(min(ideal, cap) if cap is not None else ideal)
    return run


def direction_changes(series: list[int]) -> int:
    signs = [1 if b > a else -1 for a, b in itertools.pairwise(series) if b != a]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


def step(t: int) -> int:
    return 1000 if t == 0 else 0


def ramp(t: int) -> int:
    return t // 10 if t < 150 else 0  # 0 -> 14 messages a second, then nothing


def bursts(t: int) -> int:
    return 400 if t in (0, 150, 300) else 0


def trickle(t: int) -> int:
    return 3 if t % 2 == 0 and t < 300 else 0  # below one worker's capacity, with gaps


BOUNDS = Bounds(min_workers=0, max_workers=20)


@pytest.mark.parametrize(
    "pattern,max_changes",
    [(step, 1), (ramp, 2), (bursts, 5), (trickle, 2)],
    ids=["step", "ramp", "burst", "trickle"],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_flapping_and_bounded_overshoot(
    pattern: Callable[[int], int], max_changes: int, seed: int
) -> None:
    run = simulate(pattern, steps=500, bounds=BOUNDS, seed=seed)
    # every direction change of the worker count is a real change of load: up once per
    # burst and down once after it, never back and forth under a steady or noisy load
    assert direction_changes(run.held) <= max_changes, run.held
    # overshoot: never more than the peak the backlog calls for (at the true rate), plus
    # the noise of the measured rate (25 %) and one worker of rounding
    assert max(run.held) <= math.ceil(1.25 * max(run.ideal)) + 1, (max(run.held), max(run.ideal))
    assert max(run.held) <= BOUNDS.max_workers
    # the work gets done, and the workers end once it is
    assert run.done == sum(pattern(t) for t in range(500))
    assert run.held[-1] == 0
    # a backlog is answered at the next decision
    assert run.first_out == next(t for t in range(500) if pattern(t))


def test_zero_backlog_submits_nothing() -> None:
    run = simulate(lambda t: 0, steps=200, bounds=BOUNDS)
    assert set(run.decisions) == {Action.HOLD} and max(run.held) == 0


def test_min_workers_are_kept_without_backlog_and_the_cap_binds() -> None:
    run = simulate(step, steps=400, bounds=Bounds(2, 20), cap=4)
    assert max(run.held) == 4
    # min_workers stay: idle pilots still time out (the model's and the real ones), and the
    # controller replaces them up to min_workers at once
    tail = run.held[-100:]
    assert set(tail) <= {0, 2} and tail.count(2) >= 90


def test_scale_in_waits_for_the_hold_down_and_a_rise_cancels_it() -> None:
    obs = Observation(pending=0, in_flight=0, rate_per_worker=1.0, running=0, current=5)
    low = decide(obs, Want(1, "low"), cap=None, cap_reason=None, low_since=None, now=100.0, hold_down_s=30)
    assert low.decision.action == Action.HOLD and low.low_since == 100.0
    still = decide(obs, Want(1, "low"), cap=None, cap_reason=None, low_since=100.0, now=129.0, hold_down_s=30)
    assert still.decision.action == Action.HOLD and "hold-down" in still.decision.reason
    done = decide(obs, Want(1, "low"), cap=None, cap_reason=None, low_since=100.0, now=130.0, hold_down_s=30)
    assert done.decision.action == Action.SCALE_IN and done.decision.target == 1
    back = decide(
        obs, Want(5, "steady"), cap=None, cap_reason=None, low_since=100.0, now=129.0, hold_down_s=30
    )
    assert back.decision.action == Action.HOLD and back.low_since is None


def test_a_decision_names_its_reason_and_binding_cap() -> None:
    obs = Observation(pending=900, in_flight=100, rate_per_worker=0.5, running=2, current=2)
    want = wanted(obs, Bounds(0, 8), target_drain_s=60, messages_per_worker=50)
    assert want.workers == 8 and "1000" in want.reason and "clamped" in want.reason
    d = decide(obs, want, cap=5, cap_reason="user cap", low_since=None, now=0.0, hold_down_s=30).decision
    assert (d.action, d.desired, d.target, d.cap, d.cap_reason) == (Action.SCALE_OUT, 8, 5, 5, "user cap")
    assert d.as_doc()["action"] == "scale-out"
    unknown = wanted(Observation(None, None, None, 0, 3), Bounds(0, 8), 60, 50)
    assert unknown.workers == 3 and "no queue figures" in unknown.reason


def equal_shares(demands: list[Demand], **kw: Any) -> dict[str, Grant]:
    """`allocate` with equal shares and, unless given, no fixed workers and no caps."""
    args: dict[str, Any] = {"fixed_by_user": {}, "fixed_by_location": {}, "user_max": 0, "location_max": {}}
    return allocate(demands, share=lambda u: 1.0, **{**args, **kw})


def test_fair_share_divides_a_location_cap_equally() -> None:
    demands = [Demand("a", "alice", ("loc",), 10, held={}), Demand("b", "bob", ("loc",), 10, held={})]
    grants = equal_shares(demands, location_max={"loc": 7})
    assert sorted(g.workers for g in grants.values()) == [3, 4]
    assert all("location cap" in (g.cap_reason or "") for g in grants.values())


def test_fair_share_weights_users_and_counts_fixed_workers() -> None:
    demands = [Demand("a", "alice", ("loc",), 10, held={}), Demand("b", "bob", ("loc",), 10, held={})]
    grants = allocate(
        demands,
        fixed_by_user={"bob": 2},  # bob's fixed-size taskforce holds 2 there already
        fixed_by_location={"loc": 2},
        user_max=0,
        location_max={"loc": 11},
        share=lambda u: 2.0 if u == "alice" else 1.0,
    )
    # 9 free: alice (weight 2) gets 7, bob 2 more (7/2 = 3.5 against (2 + 2)/1 = 4)
    assert (grants["a"].workers, grants["b"].workers) == (7, 2)


def test_user_cap_binds_only_that_user() -> None:
    demands = [
        Demand("a1", "alice", ("x", "y"), 4, held={}),
        Demand("a2", "alice", ("x",), 4, held={}),
        Demand("b", "bob", ("x",), 4, held={}),
    ]
    grants = equal_shares(demands, user_max=5, location_max={})
    assert grants["a1"].workers + grants["a2"].workers == 5 and grants["b"].workers == 4
    assert grants["b"].cap_reason is None and "EWMS_USER_MAX_WORKERS=5" in (grants["a2"].cap_reason or "")


def test_a_task_grows_only_into_free_room_and_one_above_its_share_shrinks() -> None:
    # alice came first and holds the whole location; bob's equal demand waits for room
    demands = [Demand("a", "alice", ("loc",), 10, held={"loc": 6}), Demand("b", "bob", ("loc",), 10, held={})]
    grants = equal_shares(demands, location_max={"loc": 6})
    assert (grants["a"].workers, grants["b"].workers, grants["b"].add) == (3, 0, {})
    assert "location cap" in (grants["b"].cap_reason or "")
    # once alice is down to her share, bob grows to his
    demands = [Demand("a", "alice", ("loc",), 10, held={"loc": 3}), Demand("b", "bob", ("loc",), 10, held={})]
    grants = equal_shares(demands, location_max={"loc": 6})
    assert (grants["a"].workers, grants["b"].workers, grants["b"].add) == (3, 3, {"loc": 3})


def test_figures_seen_while_workers_ran_do_not_restart_a_task_whose_workers_ended() -> None:
    stale = Observation(pending=117, in_flight=8, rate_per_worker=None, running=0, current=0, stale=True)
    want = wanted(stale, Bounds(0, 8), 10, 50)
    assert want.workers == 0 and "next statistics" in want.reason
    some_left = Observation(pending=117, in_flight=8, rate_per_worker=1.0, running=3, current=3, stale=True)
    assert wanted(some_left, Bounds(0, 8), 10, 50).workers == 3  # no replacements either
    fresh = Observation(pending=30, in_flight=0, rate_per_worker=None, running=0, current=0)
    assert wanted(fresh, Bounds(0, 8), 10, 50).workers == 1
