"""Taskforce transitions driven by the TMS. Each is a compare-and-set on `phase`; every
attempt, successful or not, is appended to `phase_change_log`."""

from __future__ import annotations

import time
from typing import Any

from .. import documents
from ..caller import Caller
from ..errors import NotFound
from ..phases import WATCHED, Phase
from ..storage.base import Change, Storage
from .fair_share import FairShare

STARTER_ORDER = [("priority", -1), ("n_failed_submits", 1), ("timestamp", 1)]
STOPPER_ORDER = [("priority", -1), ("timestamp", 1)]


def _logged(target: Phase, caller: Caller, *, ok: bool, context: str = "", **fields: Any) -> Change:
    entry = documents.log_entry(
        target_phase=target, was_successful=ok, source_entity=caller.entity, context=context
    )
    return Change(set=fields, push={"phase_change_log": [entry]})


async def _refuse(store: Storage, uuid: str, target: Phase, caller: Caller, expected: str) -> NotFound:
    """Record a refused transition on an existing taskforce; build the 404 to raise."""
    tf = await store.get("taskforces", {"taskforce_uuid": uuid}, projection=["phase"])
    if tf is None:
        return NotFound(f"no taskforce {uuid}")
    context = f"refused: phase is {tf['phase']}, not {expected}"
    await store.transition(
        "taskforces", {"taskforce_uuid": uuid}, _logged(target, caller, ok=False, context=context)
    )
    return NotFound(f"taskforce {uuid}: {context}")


async def _transition(
    store: Storage,
    filter: dict[str, Any],
    target: Phase,
    caller: Caller,
    *,
    fields: dict[str, Any] | None = None,
    context: str = "",
    source_event_time: float | None = None,
) -> bool:
    """Compare-and-set: move the one taskforce matching `filter` to `target`, logging it."""
    entry = documents.log_entry(
        target_phase=target,
        was_successful=True,
        source_entity=caller.entity,
        context=context,
        source_event_time=source_event_time,
    )
    change = Change(set={"phase": str(target), **(fields or {})}, push={"phase_change_log": [entry]})
    return await store.transition("taskforces", filter, change)


async def next_pending_starter(
    store: Storage, schedd: str, lease_s: float, fair: FairShare | None = None
) -> dict[str, Any] | None:
    """The next taskforce for `schedd`: with `fair`, of the owner holding the fewest workers for
    their share (ops/fair_share.py); then by priority, fewest failed submits, age."""
    now = time.time()
    waiting = {"schedd": schedd, "phase": str(Phase.PENDING_STARTER), "lease_until": {"$lte": now}}
    change = Change(set={"lease_until": now + lease_s})
    tf = None
    for owners in await fair.ranked_owners(store, schedd, waiting) if fair else []:
        tf = await store.claim(
            "taskforces", {**waiting, "owner": {"$in": owners}}, sort=STARTER_ORDER, change=change
        )
        if tf is not None:
            break
    if tf is None:
        tf = await store.claim("taskforces", waiting, sort=STARTER_ORDER, change=change)
    if tf is None:
        return None
    td = await store.get("task_directives", {"task_id": tf["task_id"]})
    mqids = [*td["input_queues"], *td["output_queues"]] if td else []
    profiles = await store.find("mqprofiles", {"mqid": {"$in": mqids}}) if mqids else []
    return {"taskforce": tf, "task_directive": td, "mqprofiles": profiles}


async def condor_submit(store: Storage, uuid: str, body: dict[str, Any], caller: Caller) -> None:
    fields = {
        "cluster_id": body["cluster_id"],
        "n_workers": body["n_workers"],
        "submit_dict": body["submit_dict"],
        "job_event_log_fpath": body["job_event_log_fpath"],
        "lease_until": 0.0,
    }
    if await _transition(
        store,
        {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STARTER)},
        Phase.CONDOR_SUBMIT,
        caller,
        fields=fields,
        context=f"cluster {body['cluster_id']}",
    ):
        return
    # the workflow ended while the TMS was submitting: keep the cluster id so it is removed
    if await _transition(
        store,
        {"taskforce_uuid": uuid, "phase": str(Phase.CANCELLED), "cluster_id": None},
        Phase.PENDING_STOPPER,
        caller,
        fields=fields,
        context=f"cluster {body['cluster_id']} submitted after the workflow ended; to be removed",
    ):
        return
    # a retried report of the same submit is a success, not an error
    same = await store.get(
        "taskforces",
        {"taskforce_uuid": uuid, "cluster_id": body["cluster_id"], "phase": {"$ne": str(Phase.CANCELLED)}},
        projection=["taskforce_uuid"],
    )
    if same:
        return
    raise await _refuse(store, uuid, Phase.CONDOR_SUBMIT, caller, str(Phase.PENDING_STARTER))


async def condor_submit_failed(
    store: Storage, uuid: str, error: str, caller: Caller, max_attempts: int, retry_delay_s: float
) -> int:
    """Record it; return the taskforce's failed submits so far (max_attempts: now submit-failed)."""
    for _ in range(20):  # compare-and-set on the counter; retried only under contention
        tf = await store.get(
            "taskforces",
            {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STARTER)},
            projection=["n_failed_submits"],
        )
        if tf is None:
            raise await _refuse(store, uuid, Phase.CONDOR_SUBMIT, caller, str(Phase.PENDING_STARTER))
        n = tf["n_failed_submits"] + 1
        entries = [
            documents.log_entry(
                target_phase=Phase.CONDOR_SUBMIT,
                was_successful=False,
                source_entity=caller.entity,
                context=f"submit failed ({n}/{max_attempts}): {error}",
            )
        ]
        fields: dict[str, Any] = {"n_failed_submits": n, "lease_until": time.time() + retry_delay_s}
        if n >= max_attempts:
            fields["phase"] = str(Phase.SUBMIT_FAILED)
            entries.append(
                documents.log_entry(
                    target_phase=Phase.SUBMIT_FAILED,
                    was_successful=True,
                    source_entity=caller.entity,
                    context=f"gave up after {n} failed submits",
                )
            )
        if await store.transition(
            "taskforces",
            {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STARTER), "n_failed_submits": n - 1},
            Change(set=fields, push={"phase_change_log": entries}),
        ):
            return n
    raise RuntimeError(f"taskforce {uuid}: too much contention recording a failed submit")


async def next_pending_stopper(store: Storage, schedd: str, lease_s: float) -> dict[str, Any] | None:
    now = time.time()
    return await store.claim(
        "taskforces",
        {"schedd": schedd, "phase": str(Phase.PENDING_STOPPER), "lease_until": {"$lte": now}},
        sort=STOPPER_ORDER,
        change=Change(set={"lease_until": now + lease_s}),
    )


async def condor_rm(store: Storage, uuid: str, caller: Caller) -> None:
    if await _transition(
        store,
        {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STOPPER)},
        Phase.CONDOR_RM,
        caller,
        fields={"lease_until": 0.0},
    ):
        return
    done = await store.get(
        "taskforces",
        {"taskforce_uuid": uuid, "phase": {"$in": [str(Phase.CONDOR_RM), str(Phase.CONDOR_COMPLETE)]}},
        projection=["taskforce_uuid"],
    )
    if done:  # a retried report, or the watcher saw the cluster gone first
        return
    raise await _refuse(store, uuid, Phase.CONDOR_RM, caller, str(Phase.PENDING_STOPPER))


async def condor_rm_failed(
    store: Storage, uuid: str, error: str, caller: Caller, retry_delay_s: float
) -> None:
    change = _logged(
        Phase.CONDOR_RM,
        caller,
        ok=False,
        context=f"condor_rm failed: {error}",
        lease_until=time.time() + retry_delay_s,
    )
    if not await store.transition(
        "taskforces", {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STOPPER)}, change
    ):
        raise await _refuse(store, uuid, Phase.CONDOR_RM, caller, str(Phase.PENDING_STOPPER))


async def condor_complete(store: Storage, uuid: str, ts: float, caller: Caller) -> None:
    if await _transition(
        store,
        {"taskforce_uuid": uuid, "phase": {"$in": [str(p) for p in WATCHED]}},
        Phase.CONDOR_COMPLETE,
        caller,
        fields={"condor_complete_ts": float(ts)},
        source_event_time=float(ts),
    ):
        return
    if await store.get(
        "taskforces",
        {"taskforce_uuid": uuid, "phase": str(Phase.CONDOR_COMPLETE)},
        projection=["taskforce_uuid"],
    ):
        return  # a retried report
    raise await _refuse(store, uuid, Phase.CONDOR_COMPLETE, caller, " or ".join(str(p) for p in WATCHED))


async def update_statuses(store: Storage, body: dict[str, Any]) -> list[dict[str, str]]:
    # report field -> taskforce field; the last two are optional (EWMS's own TMS sends neither)
    sources = {
        "compound_statuses": body.get("compound_statuses_by_taskforce", {}),
        "top_task_errors": body.get("top_task_errors_by_taskforce", {}),
        "task_counts": body.get("task_counts_by_taskforce", {}),
        "diagnosis": body.get("diagnosis_by_taskforce", {}),
    }
    now = time.time()
    uuids = list(dict.fromkeys(u for by_uuid in sources.values() for u in by_uuid))
    updates = []
    for uuid in uuids:
        fields: dict[str, Any] = {"statuses_ts": now}
        for field, by_uuid in sources.items():
            if uuid in by_uuid:
                fields[field] = by_uuid[uuid]
        updates.append(({"taskforce_uuid": uuid}, Change(set=fields)))
    matched = await store.update_each("taskforces", updates) if updates else []
    return [
        {"uuid": uuid, "status": "updated"}
        if ok
        else {"uuid": uuid, "status": "failed", "error": "no such taskforce"}
        for uuid, ok in zip(uuids, matched, strict=True)
    ]
