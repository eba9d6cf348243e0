"""What an autoscaling decision does to the store: add taskforces, stop surplus ones, record it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import documents
from ..caller import Caller
from ..config import Location
from ..ops import workers
from ..ops.workflows import add_workers
from ..phases import NOT_YET_IN_HTCONDOR, Phase
from ..storage.base import Change, Storage
from .controller import Action, Decision

CALLER = Caller(subject="autoscale", role="admin")
"""Whom the audit trail names for what the autoscaler does."""
ENTITY = "server:autoscale"
MAX_DECISIONS = 50
"""Decisions kept per task (`autoscale.last_decisions`, the schema's maxItems)."""


async def scale_out(
    store: Storage,
    locations: Mapping[str, Location],
    task_id: str,
    by_location: Mapping[str, int],
    pilot_env: Mapping[str, str],
) -> list[str]:
    """One new taskforce per location with workers to add; their uuids."""
    made = []
    for loc, n in by_location.items():
        if n > 0:
            tf = await add_workers(store, locations, CALLER, task_id, loc, n, pilot_env_defaults=pilot_env)
            made.append(tf["taskforce_uuid"])
    return made


def surplus(
    taskforces: Sequence[Mapping[str, Any]], excess: int, *, preempt: bool
) -> list[Mapping[str, Any]]:
    """Taskforces to stop for up to `excess` workers: those not submitted yet, then submitted
    ones whose jobs all wait, newest first; with `preempt`, then running ones, newest first
    (their tasks go back to the queue). Without it running pilots end by their idle timeout."""
    mine = [tf for tf in taskforces if workers.held(tf) > 0 and (preempt or workers.running(tf) == 0)]
    mine.sort(
        key=lambda tf: (workers.running(tf) > 0, tf["phase"] == str(Phase.CONDOR_SUBMIT), -tf["timestamp"])
    )
    out, freed = [], 0
    for tf in mine:
        if freed >= excess:
            break
        if workers.held(tf) <= excess - freed:
            out.append(tf)
            freed += workers.held(tf)
    return out


async def stop(store: Storage, tf: Mapping[str, Any], reason: str) -> bool:
    """Compare-and-set: cancel it before it reaches HTCondor, else send it to pending-stopper."""
    submitted = tf["phase"] == str(Phase.CONDOR_SUBMIT)
    target = Phase.PENDING_STOPPER if submitted else Phase.CANCELLED
    expected = [str(Phase.CONDOR_SUBMIT)] if submitted else [str(p) for p in NOT_YET_IN_HTCONDOR]
    entry = documents.log_entry(
        target_phase=target, was_successful=True, source_entity=ENTITY, context=reason
    )
    fields: dict[str, Any] = {"phase": str(target)}
    if submitted:
        fields["lease_until"] = 0.0
    return await store.transition(
        "taskforces",
        {"taskforce_uuid": tf["taskforce_uuid"], "phase": {"$in": expected}},
        Change(set=fields, push={"phase_change_log": [entry]}),
    )


def worth_recording(new: Decision, last: Mapping[str, Any] | None) -> bool:
    """Actions always; a hold only when its figures moved (not one entry per pass)."""
    if last is None or new.action != Action.HOLD:
        return True
    keys = ("action", "current", "desired", "target", "cap", "running", "pending")
    return any(
        last.get(k) != (str(v) if isinstance(v, Action) else v)
        for k, v in ((k, getattr(new, k)) for k in keys)
    )


async def record(
    store: Storage, task_id: str, autoscale: Mapping[str, Any], decision: Decision, low_since: float | None
) -> None:
    kept = list(autoscale.get("last_decisions") or [])
    if worth_recording(decision, kept[-1] if kept else None):
        kept = [*kept, decision.as_doc()][-MAX_DECISIONS:]
    elif low_since == autoscale.get("low_since"):
        return
    await store.transition(
        "task_directives",
        {"task_id": task_id, "autoscale.active": True},
        Change(set={"autoscale": {**autoscale, "low_since": low_since, "last_decisions": kept}}),
    )


async def deactivate(store: Storage, task_id: str, autoscale: Mapping[str, Any]) -> None:
    await store.transition(
        "task_directives",
        {"task_id": task_id, "autoscale.active": True},
        Change(set={"autoscale": {**autoscale, "active": False, "low_since": None}}),
    )
