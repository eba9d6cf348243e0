"""Layout upgrades bring a store written by an older server to the current form, on every driver."""

from __future__ import annotations

from typing import Any

from ewms_server.storage.base import SCHEMA_VERSION, Storage
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
