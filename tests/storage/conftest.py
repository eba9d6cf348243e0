"""The stores every storage test runs against: SQLite (a fresh file), mongomock through motor's
code path, and a real MongoDB when EWMS_TEST_MONGODB_URL is set."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mongomock_motor import AsyncMongoMockClient

from ewms_server.storage.base import Storage
from ewms_server.storage.mongodb import MongoStorage
from ewms_server.storage.sqlite import SQLiteStorage

MONGODB_URL = os.environ.get("EWMS_TEST_MONGODB_URL")
NO_MONGODB = "no MongoDB server here: set EWMS_TEST_MONGODB_URL"


@pytest.fixture(
    params=[
        "sqlite",
        "mongomock",
        pytest.param("mongodb", marks=pytest.mark.skipif(not MONGODB_URL, reason=NO_MONGODB)),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    s: Storage
    name = f"ewms_test_{secrets.token_hex(6)}"
    if request.param == "sqlite":
        s = SQLiteStorage(str(tmp_path / "ewms.sqlite3"))
    elif request.param == "mongomock":
        s = MongoStorage(AsyncMongoMockClient(), name)
    else:
        assert MONGODB_URL
        s = MongoStorage.from_url(MONGODB_URL, name)
    await s.migrate()
    try:
        yield s
    finally:
        if request.param == "mongodb":
            await s._client.drop_database(name)  # type: ignore[attr-defined]
        await s.close()
