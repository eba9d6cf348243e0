"""Fair share across users for pending-starter: whose taskforce a TMS is offered next.

Owners with a taskforce waiting at the schedd are ranked by the workers they hold in HTCondor
(`ops/workers.held`, over their submitted taskforces at every schedd) divided by their share
(`EWMS_USER_SHARES`, 1 by default); the claim then takes the best-ranked owner's next
taskforce in the usual order (priority, fewest failed submits, age). The ranking is reused for
`ttl_s` (one grouped count and one read of the submitted taskforces per schedd per `ttl_s`, not
per request), so the claim itself stays one indexed compare-and-set; a ranking that went stale
in that time only makes the claim fall through to the next owner.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..phases import Phase
from ..storage.base import Storage
from . import workers


@dataclass
class FairShare:
    share: Callable[[str], float]
    ttl_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _ranked: dict[str, tuple[float, list[list[str]]]] = field(default_factory=dict)

    async def ranked_owners(self, store: Storage, schedd: str, waiting: dict[str, Any]) -> list[list[str]]:
        """Owners with a taskforce matching `waiting`, best first, equal ratios grouped; [] for
        one owner or none (then no ranking is needed)."""
        hit = self._ranked.get(schedd)
        if hit is not None and self.clock() - hit[0] < self.ttl_s:
            return hit[1]
        owners = [key[0] for key in await store.count_by("taskforces", ["owner"], waiting)]
        groups: list[list[str]] = []
        if len(owners) > 1:
            groups = rank(owners, await held_by_owner(store, owners), self.share)
        self._ranked[schedd] = (self.clock(), groups)
        return groups


def rank(owners: list[str], held: Counter[str], share: Callable[[str], float]) -> list[list[str]]:
    by_ratio: dict[float, list[str]] = {}
    for owner in sorted(owners):
        by_ratio.setdefault(held[owner] / share(owner), []).append(owner)
    return [by_ratio[r] for r in sorted(by_ratio)]


async def held_by_owner(store: Storage, owners: list[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for tf in await store.find(
        "taskforces",
        {"phase": str(Phase.CONDOR_SUBMIT), "owner": {"$in": owners}},
        projection=["owner", "n_workers", "phase", "compound_statuses"],
    ):
        out[tf["owner"]] += workers.held(tf)
    return out
