"""Fair share: how the per-user and per-location caps are divided among autoscaled tasks.

Pure. First each task's entitlement: workers are dealt one at a time, each to the task whose
owner has been dealt the fewest for their share (`EWMS_USER_SHARES`, equal by default), ties
to the older task, until every task has what it wants or no cap leaves room. So two users who
want more than a location holds are entitled to half of it each (within one worker), and a
user's own cap stops only that user. Then what may be added now: a task below its entitlement
grows only into room that is free (workers others hold above their entitlement leave first, by
scale-in), in the same order. Workers of taskforces that are not autoscaled count against the
caps but are not moved.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Demand:
    task_id: str
    owner: str
    locations: tuple[str, ...]
    want: int
    held: Mapping[str, int]
    """Workers it holds now, by location."""


@dataclass(frozen=True)
class Grant:
    workers: int
    """The most it may hold after this pass: what it holds plus `add`, or its entitlement."""
    add: dict[str, int]
    """Workers to add now, by location."""
    cap_reason: str | None
    """Why its entitlement is below what it wants (None: it is not)."""


INF = float("inf")


def allocate(
    demands: Sequence[Demand],
    *,
    fixed_by_user: Mapping[str, int],
    fixed_by_location: Mapping[str, int],
    user_max: int,
    location_max: Mapping[str, int],
    share: Callable[[str], float],
) -> dict[str, Grant]:
    """`demands` oldest first; `fixed_*`: workers of taskforces that are not autoscaled."""
    entitled, reasons = _entitlements(
        demands, fixed_by_user, fixed_by_location, user_max, location_max, share
    )
    # room free now: caps minus what everyone holds
    user_free: Counter[str] = Counter()
    loc_free: dict[str, float] = {
        loc: cap - fixed_by_location.get(loc, 0) for loc, cap in location_max.items()
    }
    by_user: Counter[str] = Counter(fixed_by_user)
    for d in demands:
        by_user[d.owner] += sum(d.held.values())
        for loc, n in d.held.items():
            if loc in loc_free:
                loc_free[loc] -= n
    for user, n in by_user.items():
        user_free[user] = user_max - n if user_max else 0
    order = sorted(
        range(len(demands)), key=lambda i: (by_user[demands[i].owner] / share(demands[i].owner), i)
    )
    out: dict[str, Grant] = {}
    for i in order:
        d = demands[i]
        add: Counter[str] = Counter()
        held = sum(d.held.values())
        for _ in range(max(0, entitled[d.task_id] - held)):
            if user_max and user_free[d.owner] <= 0:
                break
            loc = max(d.locations, key=lambda x: loc_free.get(x, INF))
            if loc_free.get(loc, INF) <= 0:
                break
            add[loc] += 1
            user_free[d.owner] -= 1
            if loc in loc_free:
                loc_free[loc] -= 1
        grows = sum(add.values())
        reason = reasons.get(d.task_id)
        if held + grows < entitled[d.task_id]:
            reason = reason or "no room free yet: others hold it above their share until they scale in"
        out[d.task_id] = Grant(
            workers=held + grows if grows else min(held, entitled[d.task_id]),
            add=dict(add),
            cap_reason=reason,
        )
    return out


def _entitlements(
    demands: Sequence[Demand],
    fixed_by_user: Mapping[str, int],
    fixed_by_location: Mapping[str, int],
    user_max: int,
    location_max: Mapping[str, int],
    share: Callable[[str], float],
) -> tuple[dict[str, int], dict[str, str]]:
    by_user: Counter[str] = Counter(fixed_by_user)
    at_loc: Counter[str] = Counter(fixed_by_location)
    dealt: Counter[str] = Counter()
    blocked: dict[str, str] = {}

    def room(loc: str) -> float:
        cap = location_max.get(loc)
        return INF if cap is None else cap - at_loc[loc]

    # a heap of (owner's workers / share, task age): the next worker goes to its head
    heap = [(by_user[d.owner] / share(d.owner), i) for i, d in enumerate(demands) if d.want > 0]
    heapq.heapify(heap)
    while heap:
        key, i = heapq.heappop(heap)
        d = demands[i]
        now_key = by_user[d.owner] / share(d.owner)
        if now_key > key:  # its owner was dealt workers for another task since: requeue
            heapq.heappush(heap, (now_key, i))
            continue
        if user_max and by_user[d.owner] >= user_max:
            blocked[d.task_id] = f"user cap EWMS_USER_MAX_WORKERS={user_max}"
            continue
        loc = max(d.locations, key=room)
        if room(loc) <= 0:
            caps = ", ".join(f"{x}={location_max[x]}" for x in d.locations if x in location_max)
            blocked[d.task_id] = f"location cap EWMS_LOCATION_MAX_WORKERS ({caps}), shared fairly"
            continue
        dealt[d.task_id] += 1
        by_user[d.owner] += 1
        at_loc[loc] += 1
        if dealt[d.task_id] < d.want:
            heapq.heappush(heap, (by_user[d.owner] / share(d.owner), i))
    return {d.task_id: dealt[d.task_id] for d in demands}, blocked
