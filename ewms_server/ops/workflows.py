"""Workflow-level operations: create, deactivate (abort/finished), add workers.

Creation is one `insert_bundle`: one transaction on SQLite; on MongoDB (no transactions) the
taskforces go first and the workflow last, so an interrupted create leaves only parts without
a workflow, which launch control removes after EWMS_ORPHAN_AGE_S. Deactivation marks the
workflow first and then stops its taskforces (the launch-control sweep finishes a stop that a
crash interrupted).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import documents
from ..caller import Caller
from ..config import Location
from ..errors import Invalid, NotFound, Unprocessable
from ..phases import IN_HTCONDOR, NOT_YET_IN_HTCONDOR, Phase
from ..quotas import ADD_WORKERS, QuotaGate, Quotas
from ..rules import check_location, check_workflow_request, with_defaults
from ..storage.base import Change, DuplicateKey, Storage
from . import secrets
from .reads import get_scoped

if TYPE_CHECKING:
    from ..webhooks.outbox import Notifier

_NO_QUOTAS = QuotaGate(Quotas(0, 0, 0, 0))


async def create_workflow(
    store: Storage,
    locations: Mapping[str, Location],
    caller: Caller,
    body: dict[str, Any],
    *,
    quotas: QuotaGate = _NO_QUOTAS,
    autoscaled_pilot_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`autoscaled_pilot_env`: pilot environment defaults of autoscaled tasks' taskforces."""
    aliases = check_workflow_request(body, locations)
    await secrets.check_named(store, caller.subject, [k for t in body["tasks"] for k in t.get("secrets", [])])
    n_taskforces = sum(len(task["cluster_locations"]) for task in body["tasks"])
    async with quotas.creating_workflow(store, caller, n_taskforces):
        for attempt in range(3):
            try:
                return await _insert_bundle(
                    store, locations, caller, body, aliases, autoscaled_pilot_env or {}
                )
            except DuplicateKey:  # an id collision: vanishingly rare; new ids, try again
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


async def _insert_bundle(
    store: Storage,
    locations: Mapping[str, Location],
    caller: Caller,
    body: dict[str, Any],
    aliases: list[str],
    autoscaled_pilot_env: Mapping[str, str],
) -> dict[str, Any]:
    wf = documents.workflow(
        priority=body.get("priority", 50), owner=caller.subject, notify_url=body.get("notify_url")
    )
    wid = wf["workflow_id"]
    public = set(body.get("public_queue_aliases", []))
    profiles = {
        a: documents.mq_profile(workflow_id=wid, owner=caller.subject, alias=a, is_public=a in public)
        for a in aliases
    }
    tds, tfs = [], []
    for task in body["tasks"]:
        td = documents.task_directive(
            workflow_id=wid,
            owner=caller.subject,
            task=task,
            input_queues=[profiles[a]["mqid"] for a in task.get("input_queue_aliases", [])],
            output_queues=[profiles[a]["mqid"] for a in task.get("output_queue_aliases", [])],
        )
        tds.append(td)
        pilot_config = with_defaults(task.get("pilot_config"), documents.PILOT_CONFIG_DEFAULTS)
        if task.get("autoscale") is not None:
            env = {**autoscaled_pilot_env, **pilot_config["environment"]}
            pilot_config = {**pilot_config, "environment": env}
        for loc in task["cluster_locations"]:
            tfs.append(
                documents.taskforce(
                    task_id=td["task_id"],
                    workflow_id=wid,
                    owner=caller.subject,
                    priority=wf["priority"],
                    cluster_location=loc,
                    schedd=locations[loc].schedd,
                    collector=locations[loc].collector,
                    n_workers=task.get("n_workers", 1),
                    pilot_config=pilot_config,
                    worker_config=with_defaults(task["worker_config"], documents.WORKER_CONFIG_DEFAULTS),
                    phase=Phase.PRE_MQ_ACTIVATION,
                    source_entity=caller.entity,
                )
            )
    # the workflow last: from then it exists (see the module docstring)
    await store.insert_bundle(
        [
            ("taskforces", tfs),
            ("task_directives", tds),
            ("mqprofiles", list(profiles.values())),
            ("workflows", [wf]),
        ]
    )
    return {"workflow": wf, "task_directives": tds, "taskforces": tfs}


async def deactivate_workflow(
    store: Storage, workflow_id: str, kind: str, caller: Caller, *, notifier: Notifier | None = None
) -> int:
    wf = await get_scoped(store, "workflows", workflow_id, caller, ["deactivated"])
    if wf is None:
        raise NotFound(f"no workflow {workflow_id}")
    if wf["deactivated"] is None:
        await store.transition(
            "workflows",
            {"workflow_id": workflow_id, "deactivated": None},
            Change(set={"deactivated": kind, "deactivated_ts": time.time()}),
        )
    return await stop_taskforces(
        store, workflow_id, caller.entity, f"workflow {kind.lower()}", notifier=notifier
    )


def _to(phase: Phase, entity: str, reason: str, **fields: Any) -> Change:
    entry = documents.log_entry(target_phase=phase, was_successful=True, source_entity=entity, context=reason)
    return Change(set={"phase": str(phase), **fields}, push={"phase_change_log": [entry]})


async def stop_taskforces(
    store: Storage, workflow_id: str, entity: str, reason: str, *, notifier: Notifier | None = None
) -> int:
    """Cancel what never reached HTCondor; send the rest to pending-stopper. Idempotent. With a
    notifier, the workflow's end event is written before the stop is marked done, so a crash
    in between leaves it to launch control's repair sweep (which passes its notifier)."""
    n = await store.update_where(
        "taskforces",
        {"workflow_id": workflow_id, "phase": {"$in": [str(p) for p in NOT_YET_IN_HTCONDOR]}},
        _to(Phase.CANCELLED, entity, reason),
    )
    n += await store.update_where(
        "taskforces",
        {"workflow_id": workflow_id, "phase": {"$in": [str(p) for p in IN_HTCONDOR]}},
        _to(Phase.PENDING_STOPPER, entity, reason, lease_until=0.0),
    )
    if notifier is not None:
        wf = await store.get("workflows", {"workflow_id": workflow_id}, projection=["deactivated"])
        if wf is not None and wf["deactivated"] is not None:
            await notifier.workflow_ended(workflow_id, wf["deactivated"])
    await store.transition(
        "workflows", {"workflow_id": workflow_id}, Change(set={"taskforces_stopped": True})
    )
    return n


async def add_workers(
    store: Storage,
    locations: Mapping[str, Location],
    caller: Caller,
    task_id: str,
    location: str,
    n_workers: int,
    *,
    quotas: QuotaGate = _NO_QUOTAS,
    pilot_env_defaults: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """`pilot_env_defaults`: pilot environment values the copied pilot_config does not set."""
    td = await get_scoped(store, "task_directives", task_id, caller)
    if td is None:
        raise NotFound(f"no task directive {task_id}")
    check_location(location, locations, "body.cluster_location")
    wf = await store.get("workflows", {"workflow_id": td["workflow_id"]})
    if wf is None:
        raise NotFound(f"no task directive {task_id}")
    if wf["deactivated"] is not None:
        raise Unprocessable(
            f"workflow {wf['workflow_id']} is deactivated ({wf['deactivated']}): cannot add workers"
        )
    first = await store.find(
        "taskforces",
        {"task_id": task_id},
        projection=["pilot_config", "worker_config"],
        sort=[("timestamp", 1)],
        limit=1,
    )
    if not first:
        raise Invalid(f"task directive {task_id} has no taskforce to copy settings from")
    pilot_config = first[0]["pilot_config"]
    if pilot_env_defaults:
        env = {**pilot_env_defaults, **pilot_config.get("environment", {})}
        pilot_config = {**pilot_config, "environment": env}
    mqids = [*td["input_queues"], *td["output_queues"]]
    n_inactive = await store.count("mqprofiles", {"mqid": {"$in": mqids}, "is_activated": False})
    tf = documents.taskforce(
        task_id=task_id,
        workflow_id=wf["workflow_id"],
        owner=wf["owner"],
        priority=wf["priority"],
        cluster_location=location,
        schedd=locations[location].schedd,
        collector=locations[location].collector,
        n_workers=n_workers,
        pilot_config=pilot_config,
        worker_config=first[0]["worker_config"],
        phase=Phase.PRE_LAUNCH if n_inactive == 0 else Phase.PRE_MQ_ACTIVATION,
        source_entity=caller.entity,
        origin=ADD_WORKERS,
    )
    async with quotas.adding_workers(store, caller, wf["workflow_id"]):
        await store.insert("taskforces", [tf])
    # a deactivation that raced with this insert must still reach the new taskforce
    again = await store.get("workflows", {"workflow_id": wf["workflow_id"]}, projection=["deactivated"])
    if again is None or again["deactivated"] is not None:
        await stop_taskforces(store, wf["workflow_id"], caller.entity, "workflow deactivated")
        return await store.get("taskforces", {"taskforce_uuid": tf["taskforce_uuid"]}) or dict(tf)
    return dict(tf)
