"""The SQLite driver's threads: checkpoints are the checkpointer's job, not the writer's."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from pathlib import Path

from ewms_server import documents
from ewms_server.storage.sqlite import SQLiteStorage
from ewms_server.storage.sqlite_threads import WRITER_CHECKPOINT_PAGES


def rows_in_the_file_alone(store: Path, scratch: Path) -> int:
    """Workflows in the database file without its log: what checkpoints have copied there."""
    shutil.copyfile(store, scratch)
    with sqlite3.connect(scratch) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM workflows").fetchone()[0])
        except sqlite3.DatabaseError:  # no table yet, or copied while a checkpoint wrote: look again
            return 0


async def test_commits_reach_the_file_through_the_checkpointer_not_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "ewms.sqlite3"
    store = SQLiteStorage(str(path))
    try:
        await store.migrate()
        threshold = await store._writer.run(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert threshold == WRITER_CHECKPOINT_PAGES
        n = 300  # one transaction each: far below the writer's threshold, above SQLite's default
        for i in range(n):
            await store.insert("workflows", [documents.workflow(priority=i % 100, owner="x" * 3000)])
        deadline = time.monotonic() + 30
        while rows_in_the_file_alone(path, tmp_path / "file-only.sqlite3") < n:
            assert time.monotonic() < deadline, "the commits never reached the database file"
            await asyncio.sleep(0.05)
        assert store._checkpointer.n_checkpoints >= 1
    finally:
        await store.close()
    assert not os.path.exists(f"{path}-wal")  # the last connection to close folds in the log
