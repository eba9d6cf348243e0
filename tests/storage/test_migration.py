"""Layout upgrades bring a store written by an older server to the current form, on every driver."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ewms_server.storage import sqlite_schema
from ewms_server.storage.base import SCHEMA_VERSION, Storage
from ewms_server.storage.collections import COLLECTIONS
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


async def test_v3_a_sqlite_store_without_progress_history_gains_its_table(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    older = [spec for name, spec in COLLECTIONS.items() if name not in ("workflow_progress", "jobs")]
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite_schema._v1(conn, older)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        """INSERT INTO workflows (doc, ix) VALUES ('{"workflow_id": "WF-1"}', '{"workflow_id": "WF-1"}')"""
    )
    conn.close()
    store = SQLiteStorage(path)
    try:
        assert await store.schema_version() == 2
        assert await store.migrate() == SCHEMA_VERSION == 4
        assert await store.get("workflows", {"workflow_id": "WF-1"}) == {"workflow_id": "WF-1"}
        doc = {"workflow_id": "WF-1", "owner": "a", "last_ts": 1.0, "samples": [], "task_samples": {}}
        await store.insert("workflow_progress", [doc])
        assert await store.get("workflow_progress", {"workflow_id": "WF-1"}) == doc
    finally:
        await store.close()


async def test_v3_taskforces_show_task_counts_and_a_diagnosis(store: Storage) -> None:
    await _set_version(store, 2)
    counted = {"succeeded": 4, "failed": 1}
    await store.insert("taskforces", [_tf(1), _tf(2, task_counts=counted, diagnosis=None)])
    assert await store.migrate() == SCHEMA_VERSION
    one = await store.get("taskforces", {"taskforce_uuid": _tf(1)["taskforce_uuid"]})
    two = await store.get("taskforces", {"taskforce_uuid": _tf(2)["taskforce_uuid"]})
    assert one is not None and (one["task_counts"], one["diagnosis"]) == ({"succeeded": 0, "failed": 0}, None)
    assert two is not None and two["task_counts"] == counted  # left as it was


async def test_v4_adds_the_jobs_table(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    older = [spec for name, spec in COLLECTIONS.items() if name != "jobs"]
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite_schema._v1(conn, older)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    store = SQLiteStorage(path)
    try:
        assert await store.migrate() == SCHEMA_VERSION == 4
        await store.insert("jobs", [{"job_id": "JB-1", "owner": "a"}])
        assert await store.count("jobs", {"owner": "a"}) == 1
    finally:
        await store.close()
