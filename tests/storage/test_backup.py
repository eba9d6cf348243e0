"""The online backup of the SQLite store (`storage/sqlite_backup.py`): consistent while
written, never blocking the writer, 0600, atomic, and never over a file unless forced."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from ewms_server import documents
from ewms_server.storage.base import SCHEMA_VERSION
from ewms_server.storage.sqlite import SQLiteStorage
from ewms_server.storage.sqlite_backup import BackupError, backup


async def _store(path: Path, n: int) -> tuple[SQLiteStorage, list[str]]:
    store = SQLiteStorage(str(path))
    await store.migrate()
    wfs = [documents.workflow(priority=i % 100, owner=f"user{i % 7}") for i in range(n)]
    for i in range(0, n, 1000):
        await store.insert("workflows", wfs[i : i + 1000])
    return store, [w["workflow_id"] for w in wfs]


def _ids(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT workflow_id FROM workflows ORDER BY seq")]


async def test_a_write_during_the_backup_commits_at_once_and_stays_out_of_the_copy(tmp_path: Path) -> None:
    store, ids = await _store(tmp_path / "ewms.sqlite3", 5000)
    await store.close()
    steps: list[int] = []
    late = documents.workflow(priority=1, owner="late")

    def on_step(remaining: int, total: int) -> None:
        steps.append(remaining)
        if len(steps) == 1:  # another connection writes mid-backup: it must not wait for it
            conn = sqlite3.connect(tmp_path / "ewms.sqlite3", timeout=0.5, isolation_level=None)
            try:
                ix = {"workflow_id": late["workflow_id"], "owner": "late"}
                conn.execute(
                    "INSERT INTO workflows (doc, ix) VALUES (?, ?)", (json.dumps(late), json.dumps(ix))
                )
            finally:
                conn.close()

    done = backup(
        str(tmp_path / "ewms.sqlite3"), str(tmp_path / "copy.sqlite3"), pages_per_step=8, on_step=on_step
    )
    assert _ids(done.path) == ids  # the snapshot of when it began: the late write is not in it
    assert late["workflow_id"] in _ids(str(tmp_path / "ewms.sqlite3"))
    # it never started over although the store changed under it
    assert len(steps) == math.ceil(done.pages / 8) and steps[-1] == 0
    assert done.layout_version == SCHEMA_VERSION


async def test_a_copy_taken_while_a_writer_is_busy_is_a_consistent_prefix(tmp_path: Path) -> None:
    store, ids = await _store(tmp_path / "ewms.sqlite3", 3000)
    stop = asyncio.Event()
    written = list(ids)

    async def writer() -> None:
        while not stop.is_set():
            wf = documents.workflow(priority=50, owner="busy")
            await store.insert("workflows", [wf])
            written.append(wf["workflow_id"])  # acknowledged

    task = asyncio.create_task(writer())
    try:
        while len(written) < len(ids) + 20:
            await asyncio.sleep(0.01)
        acknowledged = len(written)
        done = await asyncio.to_thread(
            backup, str(tmp_path / "ewms.sqlite3"), str(tmp_path / "copy.sqlite3"), pages_per_step=4
        )
    finally:
        stop.set()
        await task
        await store.close()
    copied = _ids(done.path)
    assert len(copied) >= acknowledged and copied == written[: len(copied)]
    assert stat.S_IMODE(os.stat(done.path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["copy.sqlite3", "ewms.sqlite3"]  # no temporary left
    with sqlite3.connect(done.path) as conn:  # one self-contained file, a store of this layout
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reopened = SQLiteStorage(done.path)  # a server can open it as its store
    try:
        assert await reopened.count("workflows", {"owner": "busy"}) == len(copied) - len(ids)
    finally:
        await reopened.close()


async def test_never_over_an_existing_file_unless_forced(tmp_path: Path) -> None:
    store, ids = await _store(tmp_path / "ewms.sqlite3", 10)
    await store.close()
    target = tmp_path / "copy.sqlite3"
    target.write_text("precious")
    with pytest.raises(BackupError, match="exists; pass --force"):
        backup(str(tmp_path / "ewms.sqlite3"), str(target))
    assert target.read_text() == "precious"
    done = backup(str(tmp_path / "ewms.sqlite3"), str(target), force=True)
    assert _ids(done.path) == ids
    # a directory: a time-stamped file inside it
    (tmp_path / "backups").mkdir()
    named = backup(str(tmp_path / "ewms.sqlite3"), str(tmp_path / "backups"))
    assert os.path.dirname(named.path) == str(tmp_path / "backups")
    assert os.path.basename(named.path).startswith("ewms-") and _ids(named.path) == ids


def test_what_cannot_be_backed_up_is_a_clear_error_that_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no store at"):
        backup(str(tmp_path / "missing.sqlite3"), str(tmp_path / "copy.sqlite3"))
    (tmp_path / "junk.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match="cannot read the store"):
        backup(str(tmp_path / "junk.sqlite3"), str(tmp_path / "copy.sqlite3"))
    with pytest.raises(BackupError, match="no directory"):
        backup(str(tmp_path / "junk.sqlite3"), str(tmp_path / "nowhere" / "copy.sqlite3"))
    assert sorted(os.listdir(tmp_path)) == ["junk.sqlite3"]
