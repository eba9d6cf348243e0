"""One conformance suite for every store behind the storage seam (see conftest.py): each
operation of `ewms_server.storage.base.Storage`, claim races, compare-and-set refusals and the
atomicity of a bundle."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ewms_server.storage.base import SCHEMA_VERSION, Change, DuplicateKey, QueryTimeout, Storage, StoreTooNew
from ewms_server.storage.mongodb import MongoStorage
from ewms_server.storage.sqlite import SQLiteStorage

ORDER = [("priority", -1), ("n_failed_submits", 1), ("timestamp", 1)]


def tf(i: int, **kw: Any) -> dict[str, Any]:
    """A taskforce-shaped document (the drivers do not check the schema; CheckedStorage does)."""
    return {
        "taskforce_uuid": f"TF-{i:04d}",
        "workflow_id": f"WF-{i // 10:04d}",
        "task_id": f"TK-{i:04d}",
        "owner": "alice",
        "schedd": "s1",
        "phase": "pending-starter",
        "priority": 50,
        "n_failed_submits": 0,
        "timestamp": float(i),
        "lease_until": 0.0,
        "phase_change_log": [],
        "worker_config": {"n_cores": i % 3},
        **kw,
    }


async def ids(store: Storage, flt: dict[str, Any], **kw: Any) -> list[str]:
    return [d["taskforce_uuid"] for d in await store.find("taskforces", flt, **kw)]


# -- layout ---------------------------------------------------------------------------------


async def test_migrate_is_idempotent_and_records_the_version(store: Storage) -> None:
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.migrate() == SCHEMA_VERSION
    assert await store.schema_version() == SCHEMA_VERSION
    await store.ping()


async def test_a_store_newer_than_the_code_is_refused(store: Storage) -> None:
    if isinstance(store, SQLiteStorage):
        await store._writer.run(lambda c: c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}"))
    else:
        assert isinstance(store, MongoStorage)
        await store._db["ewms_meta"].update_one({"_id": "schema"}, {"$set": {"version": SCHEMA_VERSION + 1}})
    with pytest.raises(StoreTooNew, match=f"version {SCHEMA_VERSION + 1}, newer than"):
        await store.migrate()


# -- reads ------------------------------------------------------------------------------------


async def test_insert_get_find_count(store: Storage) -> None:
    await store.insert("taskforces", [tf(i, priority=i % 4 * 10) for i in range(12)])
    assert await store.get("taskforces", {"taskforce_uuid": "TF-0003"}) == tf(3, priority=30)
    assert await store.get("taskforces", {"taskforce_uuid": "nope"}) is None
    assert await store.get("taskforces", {"priority": 10}) == tf(1, priority=10)  # the first inserted
    # insertion order without a sort; limit; projection (no `_id` ever)
    assert await ids(store, {}) == [f"TF-{i:04d}" for i in range(12)]
    assert await ids(store, {"priority": {"$gte": 20}}, limit=3) == ["TF-0002", "TF-0003", "TF-0006"]
    assert await store.find(
        "taskforces", {"priority": 30}, projection=["priority", "worker_config.n_cores"]
    ) == [{"priority": 30, "worker_config": {"n_cores": i % 3}} for i in (3, 7, 11)]
    # sort on indexed fields, descending and ascending
    got = await store.find(
        "taskforces", {}, sort=[("priority", -1), ("timestamp", -1)], projection=["taskforce_uuid"]
    )
    assert [d["taskforce_uuid"] for d in got][:4] == ["TF-0011", "TF-0007", "TF-0003", "TF-0010"]
    assert await store.count("taskforces", {}) == 12
    assert await store.count("taskforces", {"priority": {"$in": [0, 10]}, "worker_config.n_cores": 1}) == 2
    # returned documents are copies
    doc = await store.get("taskforces", {"taskforce_uuid": "TF-0000"})
    assert doc is not None
    doc["phase"] = "changed"
    assert (await store.get("taskforces", {"taskforce_uuid": "TF-0000"}) or {})["phase"] == "pending-starter"


async def test_find_with_a_budget(store: Storage) -> None:
    await store.insert("taskforces", [tf(i) for i in range(300)])
    assert len(await store.find("taskforces", {"worker_config.n_cores": 1}, budget_s=5)) == 100
    if not isinstance(store, SQLiteStorage):
        pytest.skip("mongomock ignores maxTimeMS; MongoDB's own limit is passed through (cursor.max_time_ms)")
    slow = {"$or": [{"worker_config.n_cores": {"$gt": 100 + i}} for i in range(1000)]}
    with pytest.raises(QueryTimeout):
        await store.find("taskforces", slow, budget_s=0.001)
    # the connection is usable again, without the budget
    assert await store.count("taskforces", {"worker_config.n_cores": 1}) == 100


# -- inserts ----------------------------------------------------------------------------------


async def test_a_duplicate_id_is_refused(store: Storage) -> None:
    await store.insert("taskforces", [tf(1)])
    with pytest.raises(DuplicateKey):
        await store.insert("taskforces", [tf(2), tf(1), tf(3)])
    kept = await ids(store, {})
    if isinstance(store, SQLiteStorage):
        assert kept == ["TF-0001"]  # one transaction: none of them
    else:
        assert kept == ["TF-0001", "TF-0002"]  # ordered inserts: the ones before the duplicate


async def test_a_bundle_is_one_transaction_on_sqlite_and_ordered_on_mongodb(store: Storage) -> None:
    await store.insert("workflows", [{"workflow_id": "WF-0", "owner": "alice"}])
    bundle = [
        ("taskforces", [tf(1), tf(2)]),
        ("task_directives", [{"task_id": "TK-1", "workflow_id": "WF-0", "owner": "alice"}]),
        ("workflows", [{"workflow_id": "WF-0", "owner": "alice"}]),  # a duplicate: the bundle fails
    ]
    with pytest.raises(DuplicateKey):
        await store.insert_bundle(bundle)
    made = (await store.count("taskforces", {}), await store.count("task_directives", {}))
    if isinstance(store, SQLiteStorage):
        assert made == (0, 0)
    else:  # what a crash would leave: the parts before the workflow (launch control removes them)
        assert made == (2, 1)
    await store.insert_bundle(
        [("taskforces", [tf(3)]), ("workflows", [{"workflow_id": "WF-1", "owner": "b"}])]
    )
    assert await store.count("workflows", {}) == 2 and await store.get(
        "taskforces", {"taskforce_uuid": "TF-0003"}
    )


# -- claims -----------------------------------------------------------------------------------


async def test_claim_takes_the_first_by_sort_and_returns_it_changed(store: Storage) -> None:
    await store.insert(
        "taskforces",
        [
            tf(1, priority=10),
            tf(2, priority=90, schedd="s2"),
            tf(3, priority=50, n_failed_submits=1),
            tf(4, priority=50),
            tf(5, priority=90, lease_until=1e12),  # leased to someone else
        ],
    )
    order = []
    for now in (100.0, 101.0, 102.0, 103.0):
        got = await store.claim(
            "taskforces",
            {"schedd": "s1", "phase": "pending-starter", "lease_until": {"$lte": now}},
            sort=ORDER,
            change=Change(set={"lease_until": now + 1000}, push={"phase_change_log": [{"n": now}]}),
        )
        if got is None:
            order.append(None)
            continue
        assert got["lease_until"] == now + 1000 and got["phase_change_log"] == [{"n": now}]
        assert await store.get("taskforces", {"taskforce_uuid": got["taskforce_uuid"]}) == got
        order.append(got["taskforce_uuid"])
    # priority first, then fewer failed submits, then age; leased ones and other schedds never
    assert order == ["TF-0004", "TF-0003", "TF-0001", None]


async def test_claim_returns_none_when_nothing_matches(store: Storage) -> None:
    await store.insert("taskforces", [tf(1, lease_until=1e12)])
    change = Change(set={"lease_until": 5.0})
    assert await store.claim("taskforces", {"lease_until": {"$lte": 1.0}}, sort=ORDER, change=change) is None
    assert (await store.get("taskforces", {}) or {})["lease_until"] == 1e12


async def _race(claimers: list[Storage], n_docs: int) -> list[str]:
    async def claim_all(s: Storage) -> list[str]:
        mine = []
        while True:
            got = await s.claim(
                "taskforces",
                {"phase": "pending-starter", "lease_until": {"$lte": 1.0}},
                sort=ORDER,
                change=Change(set={"lease_until": 1e12}),
            )
            if got is None:
                return mine
            mine.append(got["taskforce_uuid"])

    results = await asyncio.gather(*(claim_all(c) for c in claimers for _ in range(8)))
    return [u for r in results for u in r]


async def test_concurrent_claims_never_take_one_taskforce_twice(store: Storage, tmp_path: Path) -> None:
    await store.insert("taskforces", [tf(i, priority=i % 5) for i in range(60)])
    claimers = [store]
    if isinstance(store, SQLiteStorage):  # a second "process": its own connections and threads
        other = SQLiteStorage(store.path)
        claimers.append(other)
    try:
        claimed = await _race(claimers, 60)
    finally:
        for c in claimers[1:]:
            await c.close()
    assert sorted(claimed) == [f"TF-{i:04d}" for i in range(60)]  # each exactly once


# -- updates ----------------------------------------------------------------------------------


async def test_transition_is_a_compare_and_set(store: Storage) -> None:
    await store.insert("taskforces", [tf(1), tf(2)])
    move = Change(set={"phase": "condor-submit", "cluster_id": 7}, push={"phase_change_log": [{"to": "cs"}]})
    cas = {"taskforce_uuid": "TF-0001", "phase": "pending-starter"}
    assert await store.transition("taskforces", cas, move) is True
    assert await store.transition("taskforces", cas, move) is False  # the phase moved on: refused
    doc = await store.get("taskforces", {"taskforce_uuid": "TF-0001"})
    assert doc is not None and doc["phase"] == "condor-submit" and doc["phase_change_log"] == [{"to": "cs"}]
    assert list(doc)[:2] == ["taskforce_uuid", "workflow_id"]  # fields keep their places
    assert (await store.get("taskforces", {"taskforce_uuid": "TF-0002"}) or {})["phase"] == "pending-starter"
    # only one document changes, even when several match
    assert await store.transition("taskforces", {"owner": "alice"}, Change(set={"priority": 1})) is True
    assert await store.count("taskforces", {"priority": 1}) == 1


async def test_concurrent_transitions_let_exactly_one_win(store: Storage) -> None:
    await store.insert("taskforces", [tf(1)])
    cas = {"taskforce_uuid": "TF-0001", "phase": "pending-starter"}
    wins = await asyncio.gather(
        *(store.transition("taskforces", cas, Change(set={"phase": f"p{i}"})) for i in range(20))
    )
    assert sum(wins) == 1


async def test_update_where_update_each_and_push(store: Storage) -> None:
    await store.insert("taskforces", [tf(i, phase_change_log=[{"k": 0}]) for i in range(6)])
    n = await store.update_where(
        "taskforces",
        {"worker_config.n_cores": {"$ne": 0}},
        Change(set={"phase": "cancelled"}, push={"phase_change_log": [{"k": 1}, {"k": 2}]}),
    )
    assert n == 4
    assert await store.count("taskforces", {"phase": "cancelled", "phase_change_log.k": 2}) == 4
    assert await store.update_where("taskforces", {"phase": "nope"}, Change(set={"phase": "x"})) == 0
    results = await store.update_each(
        "taskforces",
        [
            ({"taskforce_uuid": "TF-0000"}, Change(set={"compound_statuses": {"RUNNING": {"Tasking": 3}}})),
            ({"taskforce_uuid": "TF-9999"}, Change(set={"compound_statuses": {}})),
            ({"taskforce_uuid": "TF-0005"}, Change(push={"new_list": [1]})),
        ],
    )
    assert results == [True, False, True]
    assert (await store.get("taskforces", {"taskforce_uuid": "TF-0000"}) or {})["compound_statuses"] == {
        "RUNNING": {"Tasking": 3}
    }
    assert (await store.get("taskforces", {"taskforce_uuid": "TF-0005"}) or {})["new_list"] == [1]


async def test_delete_where(store: Storage) -> None:
    await store.insert("taskforces", [tf(i) for i in range(25)])
    assert await store.delete_where("taskforces", {"workflow_id": "WF-0001"}) == 10
    assert await store.delete_where("taskforces", {"workflow_id": "WF-0001"}) == 0
    assert await store.count("taskforces", {}) == 15
    await store.insert("taskforces", [tf(10)])  # its id is free again
