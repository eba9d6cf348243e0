"""Fair share: how the per-user and per-location caps are divided among autoscaled tasks.

Pure. Workers are granted one at a time, each to the task whose owner holds the fewest workers
for their share (`EWMS_USER_SHARES`, equal by default), ties to the older task, until every
task has what it wants or no cap leaves room. So two users who want more than a location holds
each get half of it (within one worker), and a user's own cap stops only that user. Workers of
taskforces that are not autoscaled count against the caps but are not moved.
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


@dataclass(frozen=True)
class Grant:
    workers: int
    by_location: dict[str, int]
    cap_reason: str | None
    """Why fewer than wanted were granted (None: all were)."""


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
    by_user: Counter[str] = Counter(fixed_by_user)
    at_loc: Counter[str] = Counter(fixed_by_location)
    granted: dict[str, Counter[str]] = {d.task_id: Counter() for d in demands}
    blocked: dict[str, str] = {}

    def room(loc: str) -> float:
        cap = location_max.get(loc)
        return float("inf") if cap is None else cap - at_loc[loc]

    # a heap of (user's workers / share, task age, index): the next worker goes to its head
    heap = [(by_user[d.owner] / share(d.owner), i, i) for i, d in enumerate(demands) if d.want > 0]
    heapq.heapify(heap)
    while heap:
        key, age, i = heapq.heappop(heap)
        d = demands[i]
        now_key = by_user[d.owner] / share(d.owner)
        if now_key > key:  # its owner got workers for another task since: requeue
            heapq.heappush(heap, (now_key, age, i))
            continue
        if user_max and by_user[d.owner] >= user_max:
            blocked[d.task_id] = f"user cap EWMS_USER_MAX_WORKERS={user_max}"
            continue
        loc = max(d.locations, key=room)
        if room(loc) <= 0:
            caps = ", ".join(f"{x}={location_max[x]}" for x in d.locations if x in location_max)
            blocked[d.task_id] = f"location cap EWMS_LOCATION_MAX_WORKERS ({caps}), shared fairly"
            continue
        granted[d.task_id][loc] += 1
        by_user[d.owner] += 1
        at_loc[loc] += 1
        if sum(granted[d.task_id].values()) < d.want:
            heapq.heappush(heap, (by_user[d.owner] / share(d.owner), age, i))
    return {
        d.task_id: Grant(
            workers=sum(granted[d.task_id].values()),
            by_location=dict(granted[d.task_id]),
            cap_reason=blocked.get(d.task_id),
        )
        for d in demands
    }
