"""How many workers a taskforce holds: what the caps, fair share and the autoscaler count."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..phases import NOT_YET_IN_HTCONDOR, Phase

LIVE = [*(str(p) for p in NOT_YET_IN_HTCONDOR), str(Phase.CONDOR_SUBMIT)]
"""Phases whose taskforce holds (or is about to hold) workers."""
ENDED_JOBS = ("COMPLETED", "REMOVED")
PROJECTION = [
    "taskforce_uuid",
    "task_id",
    "owner",
    "cluster_location",
    "n_workers",
    "phase",
    "compound_statuses",
    "timestamp",
]


def by_job_status(tf: Mapping[str, Any], status: str) -> int:
    return sum(int(n) for n in ((tf.get("compound_statuses") or {}).get(status) or {}).values())


def held(tf: Mapping[str, Any]) -> int:
    """Workers a live taskforce holds: all of them before its cluster exists; then its jobs not
    ended (a job waiting to start counts, so a burst of submits cannot outrun a cap)."""
    if tf["phase"] == str(Phase.CONDOR_SUBMIT):
        return max(0, int(tf["n_workers"]) - sum(by_job_status(tf, s) for s in ENDED_JOBS))
    if tf["phase"] in LIVE:
        return int(tf["n_workers"])
    return 0


def running(tf: Mapping[str, Any]) -> int:
    return by_job_status(tf, "RUNNING")
