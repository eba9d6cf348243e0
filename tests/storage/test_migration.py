"""Layout upgrades bring a store written by an older server to the current form, on every driver."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ewms_server.storage import sqlite_schema
from ewms_server.storage.base import SCHEMA_VERSION, DuplicateKey, Storage
from ewms_server.storage.collections import COLLECTIONS, CollectionSpec
from ewms_server.storage.mongodb import MongoStorage
from ewms_server.storage.sqlite import SQLiteStorage


async def _set_version(store: Storage, version: int) -> None:
    if isinstance(store, SQLiteStorage):
        await store._writer.run(lambda c: c.execute(f"PRAGMA user_version = {version}"))
    else:
        assert isinstance(store, MongoStorage)
        await store._db["ewms_meta"].update_one({"_id": "schema"}, {"$set": {"version": version}})


def _tf(n: int, **fields: Any) -> dict[str, Any]:
    return {"taskforce_uuid": f"TF-{n:012x}-0000-000000", "owner": "alice", "phase": "pre-launch", **fields}


async def test_v2_taskforces_in_ewms_form(store: Storage) -> None:
    """collector "" -> null (the location names none), job_event_log_fpath null -> "" (not
    yet submitted); anything else is left as it was."""
    assert SCHEMA_VERSION >= 2
    await _set_version(store, 1)
    await store.insert(
        "taskforces",
        [
            _tf(1, collector="", job_event_log_fpath=None),
            _tf(2, collector="cm", job_event_log_fpath="/var/log/tf.log"),
            _tf(3, collector=None, job_event_log_fpath=""),
        ],
    )
    assert await store.migrate() == SCHEMA_VERSION
    assert await store.migrate() == SCHEMA_VERSION  # idempotent
    for n, want in ((1, (None, "")), (2, ("cm", "/var/log/tf.log")), (3, (None, ""))):
        d = await store.get("taskforces", {"taskforce_uuid": _tf(n)["taskforce_uuid"]})
        assert d is not None and (d["collector"], d["job_event_log_fpath"]) == want, (n, d)
    assert await store.schema_version() == SCHEMA_VERSION


def _old_sqlite_store(path: str, specs: list[CollectionSpec], version: int) -> None:
    """A store file with these tables at this layout version, holding workflow WF-1 as an old
    server wrote it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        sqlite_schema._v1(conn, specs)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute(
            """INSERT INTO workflows (doc, ix) VALUES ('{"workflow_id": "WF-1"}', '{"workflow_id": "WF-1"}')"""
        )
    finally:
        conn.close()


async def test_v3_a_sqlite_store_without_progress_history_gains_its_table(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    _old_sqlite_store(path, _older_specs(2), 2)
    store = SQLiteStorage(path)
    try:
        assert await store.schema_version() == 2
        assert await store.migrate() == SCHEMA_VERSION >= 3
        assert await store.get("workflows", {"workflow_id": "WF-1"}, projection=["workflow_id"]) == {
            "workflow_id": "WF-1"
        }
        doc = {"workflow_id": "WF-1", "owner": "a", "last_ts": 1.0, "samples": [], "task_samples": {}}
        await store.insert("workflow_progress", [doc])
        assert await store.get("workflow_progress", {"workflow_id": "WF-1"}) == doc
    finally:
        await store.close()


async def test_v4_a_sqlite_store_of_layout_3_gains_secrets_and_then_the_outbox(tmp_path: Path) -> None:
    """3 -> 4 -> 5 in one migrate: the secrets table, then the outbox and the notify fields."""
    path = str(tmp_path / "ewms.sqlite3")
    _old_sqlite_store(path, _older_specs(3), 3)
    store = SQLiteStorage(path)
    try:
        tables = "SELECT name FROM sqlite_master WHERE type = 'table'"
        assert {"secrets", "webhook_outbox"}.isdisjoint(
            await store._readers.run(lambda c: {r[0] for r in c.execute(tables)})
        )
        assert await store.migrate() == SCHEMA_VERSION >= 5
        await _secrets_are_unique_per_owner_and_key(store)
        await _workflows_and_outbox_in_layout_5(store)
    finally:
        await store.close()


async def test_v4_secrets_are_unique_per_owner_and_key(store: Storage) -> None:
    await _set_version(store, 3)
    older = {"task_id": "TK-1", "owner": "alice", "workflow_id": "WF-1"}
    named = {"task_id": "TK-2", "owner": "alice", "workflow_id": "WF-1", "secrets": ["K"]}
    await store.insert("task_directives", [older, named])
    assert await store.migrate() == SCHEMA_VERSION
    await _secrets_are_unique_per_owner_and_key(store)
    # every task directive names its secrets from now on: none on older ones
    for tid, want in (("TK-1", []), ("TK-2", ["K"])):
        td = await store.get("task_directives", {"task_id": tid})
        assert td is not None and td["secrets"] == want


async def _secrets_are_unique_per_owner_and_key(store: Storage) -> None:
    def secret(n: int, owner: str, key: str) -> dict[str, Any]:
        return {
            "secret_id": f"SE-{n}",
            "owner": owner,
            "key": key,
            "ciphertext": "v1:x",
            "created_ts": 1.0,
            "updated_ts": 1.0,
        }

    await store.insert("secrets", [secret(1, "alice", "K"), secret(2, "bob", "K"), secret(3, "alice", "L")])
    with pytest.raises(DuplicateKey):
        await store.insert("secrets", [secret(4, "alice", "K")])
    assert await store.count("secrets", {"owner": "alice"}) == 2
    found = await store.get("secrets", {"owner": "bob", "key": "K"})
    assert found is not None and found["secret_id"] == "SE-2"


async def test_v3_taskforces_show_task_counts_and_a_diagnosis(store: Storage) -> None:
    await _set_version(store, 2)
    counted = {"succeeded": 4, "failed": 1}
    await store.insert("taskforces", [_tf(1), _tf(2, task_counts=counted, diagnosis=None)])
    assert await store.migrate() == SCHEMA_VERSION
    one = await store.get("taskforces", {"taskforce_uuid": _tf(1)["taskforce_uuid"]})
    two = await store.get("taskforces", {"taskforce_uuid": _tf(2)["taskforce_uuid"]})
    assert one is not None and (one["task_counts"], one["diagnosis"]) == ({"succeeded": 0, "failed": 0}, None)
    assert two is not None and two["task_counts"] == counted  # left as it was


def _older_specs(version: int) -> list[CollectionSpec]:
    """The collection table as this older layout had it: before 7 no jobs, before 6 no quarantine, before 5 no
    outbox and workflows without `notify_watch`, before 4 no secrets, before 3 no progress
    history."""
    since = {
        "workflow_progress": 3,
        "secrets": 4,
        "webhook_outbox": 5,
        "quarantine": 6,
        "machine_stats": 6,
        "jobs": 7,
    }
    wf = COLLECTIONS["workflows"]
    old_wf = replace(wf, indexes=tuple(ix for ix in wf.indexes if "notify_watch" not in ix.fields))
    return [
        old_wf if s.name == "workflows" else s
        for s in COLLECTIONS.values()
        if since.get(s.name, 0) <= version
    ]


async def test_v5_a_sqlite_store_of_layout_4_gains_the_outbox_and_notify_fields(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    _old_sqlite_store(path, _older_specs(4), 4)
    store = SQLiteStorage(path)
    try:
        assert "notify_watch" not in await store._readers.run(
            lambda c: {r[1] for r in c.execute('PRAGMA table_xinfo("workflows")')}
        )
        assert await store.migrate() == SCHEMA_VERSION >= 5
        await _workflows_and_outbox_in_layout_5(store)
        await _secrets_are_unique_per_owner_and_key(store)  # layout 4's table, left as it was
    finally:
        await store.close()


async def _workflows_and_outbox_in_layout_5(store: Storage) -> None:
    wf = await store.get("workflows", {"workflow_id": "WF-1"})
    assert wf == {"workflow_id": "WF-1", "notify_url": None, "notify_watch": False}
    # the new indexed field is a column now, read by filters
    assert await store.count("workflows", {"notify_watch": False}) == 1
    assert await store.count("workflows", {"notify_watch": True}) == 0
    row = {"delivery_id": "WH-1", "event_key": "WF-1:x", "workflow_id": "WF-1", "status": "pending"}
    await store.insert("webhook_outbox", [row])
    assert await store.get("webhook_outbox", {"status": "pending"}) == row


async def test_v5_workflows_show_a_notify_url(store: Storage) -> None:
    await _set_version(store, 4)
    await store.insert(
        "workflows",
        [
            {"workflow_id": "WF-1", "owner": "a"},
            {"workflow_id": "WF-2", "owner": "a", "notify_url": "https://x/"},
        ],
    )
    assert await store.migrate() == SCHEMA_VERSION
    one = await store.get("workflows", {"workflow_id": "WF-1"})
    two = await store.get("workflows", {"workflow_id": "WF-2"})
    assert one is not None and (one["notify_url"], one["notify_watch"]) == (None, False)
    assert two is not None and two["notify_url"] == "https://x/"  # left as it was


async def test_v6_a_sqlite_store_of_layout_5_gains_the_quarantine_tables(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    _old_sqlite_store(path, _older_specs(5), 5)
    store = SQLiteStorage(path)
    try:
        assert await store.migrate() == SCHEMA_VERSION >= 6
        entry = {
            "quarantine_id": "QR-1",
            "owner": None,
            "workflow_id": None,
            "machine": "m2",
            "location": "local",
            "reason": "r",
            "since": 1.0,
            "until": 2.0,
            "source": "auto",
        }
        await store.insert("quarantine", [entry])
        assert await store.get("quarantine", {"location": "local", "machine": "m2"}) == entry
        assert await store.find("machine_stats", {"location": "local", "machine": "m2"}) == []
    finally:
        await store.close()


async def test_v7_a_sqlite_store_of_layout_6_gains_the_jobs_table(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    _old_sqlite_store(path, _older_specs(6), 6)
    store = SQLiteStorage(path)
    try:
        assert "jobs" not in await store._readers.run(
            lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        )
        assert await store.migrate() == SCHEMA_VERSION == 7
        await store.insert("jobs", [{"job_id": "JB-1", "owner": "a", "published": False, "state": "queued"}])
        assert await store.count("jobs", {"owner": "a"}) == 1
        assert await store.count("jobs", {"published": False, "state": "queued"}) == 1
        # older layouts' tables, left as they were
        await store.insert(
            "webhook_outbox", [{"delivery_id": "WH-1", "event_key": "WF-1:x", "status": "pending"}]
        )
        assert await store.count("webhook_outbox", {"status": "pending"}) == 1
    finally:
        await store.close()
