"""Upgrading a store made by the previous layout (version 1, no progress history)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ewms_server.storage import sqlite_schema
from ewms_server.storage.base import SCHEMA_VERSION
from ewms_server.storage.collections import COLLECTIONS
from ewms_server.storage.sqlite import SQLiteStorage


async def test_a_version_1_sqlite_store_gains_the_progress_table_and_keeps_its_data(tmp_path: Path) -> None:
    path = str(tmp_path / "ewms.sqlite3")
    old = [spec for name, spec in COLLECTIONS.items() if name != "workflow_progress"]
    conn = sqlite3.connect(path, isolation_level=None)
    sqlite_schema._v1(conn, old)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        """INSERT INTO workflows (doc, ix) VALUES ('{"workflow_id": "WF-1"}', '{"workflow_id": "WF-1"}')"""
    )
    conn.close()
    store = SQLiteStorage(path)
    try:
        assert await store.schema_version() == 1
        assert await store.migrate() == SCHEMA_VERSION == 2
        assert await store.get("workflows", {"workflow_id": "WF-1"}) == {"workflow_id": "WF-1"}
        doc = {"workflow_id": "WF-1", "owner": "a", "last_ts": 1.0, "samples": [], "task_samples": {}}
        await store.insert("workflow_progress", [doc])
        assert await store.get("workflow_progress", {"workflow_id": "WF-1"}) == doc
    finally:
        await store.close()
