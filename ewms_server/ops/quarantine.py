"""Quarantine: failures counted per machine from the TMS's reports, entries made when a machine
(or a whole location) crosses the policy's threshold, and the entries' reads and admin edits.

The TMS reports, per taskforce, what its jobs did on each machine since the cluster started
(`machine_failures_by_taskforce`). Each (taskforce, machine) keeps its last counts and the
changes of the window in `machine_stats`; a machine's verdict weighs the changes of every
taskforce that ran there. Failed and successful submits count for the location as machine "*".
"""

from __future__ import annotations

import time
from typing import Any

from .. import ids
from ..caller import Caller
from ..errors import Invalid, NotFound
from ..quarantine_rules import ANY_MACHINE, QuarantinePolicy, failures_of
from ..storage.base import Change, DuplicateKey, Storage

ENTRY_FIELDS = ("machine", "location", "reason", "since", "until", "source")
MAX_EVENTS = 1000
MAX_VISIBLE_STATS = 10_000
"""Most (taskforce, machine) records read to find the machines a user's workflows touched."""
_KINDS = ("tasks_failed", "fatal", "held", "succeeded")


def _view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ENTRY_FIELDS}


async def active(
    store: Storage, locations: list[str] | None = None, now: float | None = None
) -> list[dict[str, Any]]:
    """Entries in force (at `locations`, else everywhere), by location then machine."""
    now = time.time() if now is None else now
    filt: dict[str, Any] = {"until": {"$gt": now}}
    if locations is not None:
        filt["location"] = {"$in": locations}
    docs = await store.find("quarantine", filt)
    return sorted((_view(d) for d in docs), key=lambda e: (e["location"], e["machine"]))


async def visible(store: Storage, caller: Caller) -> list[dict[str, Any]]:
    """An admin's view: every entry; a user's: machines where their taskforces ran (and the
    pauses of locations where they ran)."""
    entries = await active(store)
    if caller.role == "admin":
        return entries
    stats = await store.find(
        "machine_stats",
        {"owner": caller.subject},
        projection=["location", "machine"],
        limit=MAX_VISIBLE_STATS,
    )
    touched = {(s["location"], s["machine"]) for s in stats}
    locations = {loc for loc, _ in touched}
    return [
        e
        for e in entries
        if (e["location"], e["machine"]) in touched
        or (e["machine"] == ANY_MACHINE and e["location"] in locations)
    ]


async def paused_locations(store: Storage, now: float | None = None) -> list[str]:
    """Locations whose every machine is quarantined (machine "*"): no taskforce is offered there."""
    now = time.time() if now is None else now
    docs = await store.find(
        "quarantine", {"machine": ANY_MACHINE, "until": {"$gt": now}}, projection=["location"]
    )
    return sorted({d["location"] for d in docs})


async def put(
    store: Storage, *, machine: str, location: str, reason: str, until: float, source: str, now: float
) -> dict[str, Any]:
    """Make or extend the entry of (location, machine); an expired one is replaced."""
    await store.delete_where("quarantine", {"location": location, "machine": machine, "until": {"$lte": now}})
    doc = {
        "quarantine_id": ids.new_id("QR"),
        "owner": None,
        "workflow_id": None,
        "machine": machine,
        "location": location,
        "reason": reason[:1024],
        "since": now,
        "until": until,
        "source": source[:300],
    }
    try:
        await store.insert("quarantine", [doc])
        return _view(doc)
    except DuplicateKey:  # in force already: extended (never shortened), its reason updated
        filt = {"location": location, "machine": machine}
        current = await store.get("quarantine", filt)
        if current is None:
            raise
        fields = {
            "until": max(until, float(current["until"])),
            "reason": doc["reason"],
            "source": doc["source"],
        }
        await store.transition("quarantine", filt, Change(set=fields))
        return _view({**current, **fields})


async def add(
    store: Storage, body: dict[str, Any], caller: Caller, policy: QuarantinePolicy, locations: list[str]
) -> dict[str, Any]:
    if body["location"] not in locations:
        raise Invalid(f"unknown cluster location {body['location']!r} (not in EWMS_CLUSTER_LOCATIONS)")
    now = time.time()
    return await put(
        store,
        machine=body["machine"],
        location=body["location"],
        reason=body.get("reason") or "added by an admin",
        until=now + float(body.get("duration_s") or policy.cooldown_s),
        source=f"admin:{caller.subject}",
        now=now,
    )


async def lift(store: Storage, machine: str, location: str) -> int:
    n = await store.delete_where(
        "quarantine", {"location": location, "machine": machine, "until": {"$gt": time.time()}}
    )
    if not n:
        raise NotFound(f"no quarantine entry in force for machine {machine!r} at {location!r}")
    return n


# --- counting ----------------------------------------------------------------------------------


async def _record(
    store: Storage,
    tf: dict[str, Any],
    machine: str,
    counts: dict[str, int],
    policy: QuarantinePolicy,
    now: float,
) -> bool:
    """Store one (taskforce, machine)'s new counts; True when they grew."""
    filt = {"taskforce_uuid": tf["taskforce_uuid"], "machine": machine}
    old = await store.get("machine_stats", filt)
    before = old["counts"] if old else dict.fromkeys(_KINDS, 0)
    new = {k: max(int(counts.get(k, 0)), int(before.get(k, 0))) for k in _KINDS}  # never backwards
    failed = failures_of(new) - failures_of(before)
    succeeded = new["succeeded"] - int(before.get("succeeded", 0))
    if old is not None and not failed and not succeeded:
        return False
    events = [e for e in (old["events"] if old else []) if e[0] >= now - policy.window_s]
    events = [*events, [now, failed, succeeded]][-MAX_EVENTS:]
    if old is not None:
        await store.transition(
            "machine_stats", filt, Change(set={"counts": new, "events": events, "updated": now})
        )
        return True
    doc = {
        "stat_id": ids.new_id("MS"),
        "owner": tf["owner"],
        "workflow_id": tf["workflow_id"],
        "taskforce_uuid": tf["taskforce_uuid"],
        "location": tf["cluster_location"],
        "machine": machine,
        "counts": new,
        "events": events,
        "updated": now,
    }
    try:
        await store.insert("machine_stats", [doc])
    except DuplicateKey:  # the same report twice at once: the other one stored it
        return False
    return True


async def _window(
    store: Storage, location: str, machine: str | None, policy: QuarantinePolicy, now: float
) -> tuple[int, int, int]:
    """(failures, successes, machines with failures) in the window, at one machine or all
    real machines of the location (machine None)."""
    since = now - policy.window_s
    filt: dict[str, Any] = {"location": location, "updated": {"$gte": since}}
    filt["machine"] = machine if machine is not None else {"$ne": ANY_MACHINE}
    failures = successes = 0
    failing: set[str] = set()
    for doc in await store.find("machine_stats", filt, projection=["machine", "events"]):
        for ts, f, s in doc["events"]:
            if ts >= since:
                failures += int(f)
                successes += int(s)
                if f:
                    failing.add(doc["machine"])
    return failures, successes, len(failing)


async def _judge(store: Storage, location: str, machine: str, policy: QuarantinePolicy, now: float) -> None:
    failures, successes, _ = await _window(store, location, machine, policy, now)
    if not policy.verdict(failures, successes):
        return
    if await store.get("quarantine", {"location": location, "machine": machine, "until": {"$gt": now}}):
        return
    what = "submits" if machine == ANY_MACHINE else "tasks, pilots or jobs"
    await put(
        store,
        machine=machine,
        location=location,
        reason=policy.reason(failures, successes, what),
        until=now + policy.cooldown_s,
        source="auto",
        now=now,
    )


async def _judge_location(store: Storage, location: str, policy: QuarantinePolicy, now: float) -> None:
    """Every machine of the location failing, nothing succeeding: pause the location."""
    failures, successes, n_failing = await _window(store, location, None, policy, now)
    if n_failing < 2 or successes or not policy.verdict(failures, successes):
        return
    if await store.get("quarantine", {"location": location, "machine": ANY_MACHINE, "until": {"$gt": now}}):
        return
    reason = f"every machine fails: {policy.reason(failures, successes)} on {n_failing} machines"
    await put(
        store,
        machine=ANY_MACHINE,
        location=location,
        reason=reason,
        until=now + policy.cooldown_s,
        source="auto",
        now=now,
    )


async def record_report(store: Storage, body: dict[str, Any], policy: QuarantinePolicy) -> None:
    """A statuses report's `machine_failures_by_taskforce`: store the counts, judge the machines."""
    report: dict[str, dict[str, dict[str, int]]] = body.get("machine_failures_by_taskforce") or {}
    if not report:
        return
    now = time.time()
    tfs = await store.find(
        "taskforces",
        {"taskforce_uuid": {"$in": list(report)}},
        projection=["taskforce_uuid", "owner", "workflow_id", "cluster_location"],
    )
    touched: set[tuple[str, str]] = set()
    for tf in tfs:
        for machine, counts in report[tf["taskforce_uuid"]].items():
            if await _record(store, tf, machine, counts, policy, now):
                touched.add((tf["cluster_location"], machine))
    for location, machine in sorted(touched):
        await _judge(store, location, machine, policy, now)
    for location in sorted({loc for loc, _ in touched}):
        await _judge_location(store, location, policy, now)


async def record_submit(store: Storage, uuid: str, ok: bool, policy: QuarantinePolicy) -> None:
    """A submit's outcome counts for its location (machine "*"): all failing pauses it."""
    tf = await store.get(
        "taskforces",
        {"taskforce_uuid": uuid},
        projection=["taskforce_uuid", "owner", "workflow_id", "cluster_location"],
    )
    if tf is None:
        return
    now = time.time()
    old = await store.get(
        "machine_stats", {"taskforce_uuid": uuid, "machine": ANY_MACHINE}, projection=["counts"]
    )
    counts = dict(old["counts"]) if old else dict.fromkeys(_KINDS, 0)
    counts["succeeded" if ok else "tasks_failed"] += 1
    if await _record(store, tf, ANY_MACHINE, counts, policy, now) and not ok:
        await _judge(store, tf["cluster_location"], ANY_MACHINE, policy, now)
