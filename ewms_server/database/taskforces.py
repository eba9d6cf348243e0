"""Taskforce transitions driven by the TMS. Each is a compare-and-set on `phase`; every
attempt, successful or not, is appended to `phase_change_log`."""

from __future__ import annotations

import time
from typing import Any

from .. import documents
from ..errors import NotFound
from ..phases import WATCHED, Phase
from .store import Caller, Store

STARTER_ORDER = [("priority", -1), ("n_failed_submits", 1), ("timestamp", 1)]
STOPPER_ORDER = [("priority", -1), ("timestamp", 1)]


async def _refuse(store: Store, uuid: str, target: Phase, caller: Caller, expected: str) -> NotFound:
    """Record a refused transition on an existing taskforce; build the 404 to raise."""
    tf = await store.taskforces.find_one({"taskforce_uuid": uuid}, projection=["phase"])
    if tf is None:
        return NotFound(f"no taskforce {uuid}")
    context = f"refused: phase is {tf['phase']}, not {expected}"
    await store.update_one(
        "taskforces",
        {"taskforce_uuid": uuid},
        {
            "$push": {
                "phase_change_log": documents.log_entry(
                    target_phase=target, was_successful=False, source_entity=caller.entity, context=context
                )
            }
        },
    )
    return NotFound(f"taskforce {uuid}: {context}")


async def _transition(
    store: Store,
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
    done = await store.find_one_and_update(
        "taskforces",
        filter,
        {"$set": {"phase": str(target), **(fields or {})}, "$push": {"phase_change_log": entry}},
        projection=["taskforce_uuid"],
    )
    return done is not None


async def next_pending_starter(store: Store, schedd: str, lease_s: float) -> dict[str, Any] | None:
    now = time.time()
    tf = await store.find_one_and_update(
        "taskforces",
        {"schedd": schedd, "phase": str(Phase.PENDING_STARTER), "lease_until": {"$lte": now}},
        {"$set": {"lease_until": now + lease_s}},
        sort=STARTER_ORDER,
    )
    if tf is None:
        return None
    td = await store.task_directives.find_one({"task_id": tf["task_id"]})
    mqids = [*td["input_queues"], *td["output_queues"]] if td else []
    profiles = await store.mqprofiles.find({"mqid": {"$in": mqids}}) if mqids else []
    return {"taskforce": tf, "task_directive": td, "mqprofiles": profiles}


async def condor_submit(store: Store, uuid: str, body: dict[str, Any], caller: Caller) -> None:
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
    same = await store.taskforces.find_one(
        {"taskforce_uuid": uuid, "cluster_id": body["cluster_id"], "phase": {"$ne": str(Phase.CANCELLED)}},
        projection=["taskforce_uuid"],
    )
    if same:
        return
    raise await _refuse(store, uuid, Phase.CONDOR_SUBMIT, caller, str(Phase.PENDING_STARTER))


async def condor_submit_failed(
    store: Store, uuid: str, error: str, caller: Caller, max_attempts: int, retry_delay_s: float
) -> None:
    for _ in range(20):  # compare-and-set on the counter; retried only under contention
        tf = await store.taskforces.find_one(
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
        ok = await store.find_one_and_update(
            "taskforces",
            {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STARTER), "n_failed_submits": n - 1},
            {"$set": fields, "$push": {"phase_change_log": {"$each": entries}}},
            projection=["taskforce_uuid"],
        )
        if ok:
            return
    raise RuntimeError(f"taskforce {uuid}: too much contention recording a failed submit")


async def next_pending_stopper(store: Store, schedd: str, lease_s: float) -> dict[str, Any] | None:
    now = time.time()
    return await store.find_one_and_update(
        "taskforces",
        {"schedd": schedd, "phase": str(Phase.PENDING_STOPPER), "lease_until": {"$lte": now}},
        {"$set": {"lease_until": now + lease_s}},
        sort=STOPPER_ORDER,
    )


async def condor_rm(store: Store, uuid: str, caller: Caller) -> None:
    if await _transition(
        store,
        {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STOPPER)},
        Phase.CONDOR_RM,
        caller,
        fields={"lease_until": 0.0},
    ):
        return
    done = await store.taskforces.find_one(
        {"taskforce_uuid": uuid, "phase": {"$in": [str(Phase.CONDOR_RM), str(Phase.CONDOR_COMPLETE)]}},
        projection=["taskforce_uuid"],
    )
    if done:  # a retried report, or the watcher saw the cluster gone first
        return
    raise await _refuse(store, uuid, Phase.CONDOR_RM, caller, str(Phase.PENDING_STOPPER))


async def condor_rm_failed(store: Store, uuid: str, error: str, caller: Caller, retry_delay_s: float) -> None:
    ok = await store.find_one_and_update(
        "taskforces",
        {"taskforce_uuid": uuid, "phase": str(Phase.PENDING_STOPPER)},
        {
            "$set": {"lease_until": time.time() + retry_delay_s},
            "$push": {
                "phase_change_log": documents.log_entry(
                    target_phase=Phase.CONDOR_RM,
                    was_successful=False,
                    source_entity=caller.entity,
                    context=f"condor_rm failed: {error}",
                )
            },
        },
        projection=["taskforce_uuid"],
    )
    if not ok:
        raise await _refuse(store, uuid, Phase.CONDOR_RM, caller, str(Phase.PENDING_STOPPER))


async def condor_complete(store: Store, uuid: str, ts: float, caller: Caller) -> None:
    if await _transition(
        store,
        {"taskforce_uuid": uuid, "phase": {"$in": [str(p) for p in WATCHED]}},
        Phase.CONDOR_COMPLETE,
        caller,
        fields={"condor_complete_ts": float(ts)},
        source_event_time=float(ts),
    ):
        return
    if await store.taskforces.find_one(
        {"taskforce_uuid": uuid, "phase": str(Phase.CONDOR_COMPLETE)}, projection=["taskforce_uuid"]
    ):
        return  # a retried report
    raise await _refuse(store, uuid, Phase.CONDOR_COMPLETE, caller, " or ".join(str(p) for p in WATCHED))


async def update_statuses(store: Store, body: dict[str, Any]) -> list[dict[str, str]]:
    errors = body.get("top_task_errors_by_taskforce", {})
    statuses = body.get("compound_statuses_by_taskforce", {})
    now = time.time()
    results = []
    for uuid in dict.fromkeys([*statuses, *errors]):
        fields: dict[str, Any] = {"statuses_ts": now}
        if uuid in statuses:
            fields["compound_statuses"] = statuses[uuid]
        if uuid in errors:
            fields["top_task_errors"] = errors[uuid]
        matched = await store.update_one("taskforces", {"taskforce_uuid": uuid}, {"$set": fields})
        if matched:
            results.append({"uuid": uuid, "status": "updated"})
        else:
            results.append({"uuid": uuid, "status": "failed", "error": "no such taskforce"})
    return results
