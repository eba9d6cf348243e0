"""The file cache conformance suite: the directory store always, GridFS against a real MongoDB
(EWMS_TEST_MONGODB_URL; mongomock has no GridFS)."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ewms_server.storage.files_base import CHUNK, FileMissing, FileStore
from ewms_server.storage.files_dir import DirectoryFileStore
from tests.storage.conftest import MONGODB_URL, NO_MONGODB


@pytest.fixture(
    params=["directory", pytest.param("gridfs", marks=pytest.mark.skipif(not MONGODB_URL, reason=NO_MONGODB))]
)
async def files(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStore]:
    if request.param == "directory":
        yield DirectoryFileStore(str(tmp_path / "files"))
        return
    from motor.motor_asyncio import AsyncIOMotorClient

    from ewms_server.storage.files_gridfs import GridFSFileStore

    assert MONGODB_URL
    client = AsyncIOMotorClient(MONGODB_URL)
    name = f"ewms_test_{secrets.token_hex(6)}"
    try:
        yield GridFSFileStore(client[name])
    finally:
        await client.drop_database(name)
        client.close()


async def put(files: FileStore, ns: str, name: str, *parts: bytes) -> None:
    w = files.writer(ns, name)
    for p in parts:
        await w.write(p)
    stored = await w.commit()
    data = b"".join(parts)
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())


async def get(files: FileStore, ns: str, name: str, start: int = 0) -> bytes:
    return b"".join([c async for c in files.read(ns, name, start)])


async def test_round_trip_in_chunks_and_from_an_offset(files: FileStore) -> None:
    big = os.urandom(CHUNK * 2 + 123)
    await put(files, "JB-1", "dir/big.bin", big[:1000], big[1000:])
    await put(files, "JB-1", "empty", b"")
    assert await get(files, "JB-1", "dir/big.bin") == big
    assert await get(files, "JB-1", "dir/big.bin", 5000) == big[5000:]
    assert max([len(c) async for c in files.read("JB-1", "dir/big.bin")]) <= CHUNK
    assert await get(files, "JB-1", "empty") == b""
    assert await files.names("JB-1") == ["dir/big.bin", "empty"]


async def test_a_write_is_invisible_until_commit_and_abort_leaves_nothing(files: FileStore) -> None:
    w = files.writer("JB-2", "a.txt")
    await w.write(b"half")
    assert await files.names("JB-2") == []
    with pytest.raises(FileMissing):
        await get(files, "JB-2", "a.txt")
    await w.abort()
    assert await files.names("JB-2") == []


async def test_a_new_version_replaces_the_old(files: FileStore) -> None:
    await put(files, "JB-3", "a.txt", b"one")
    await put(files, "JB-3", "a.txt", b"two!")
    assert await get(files, "JB-3", "a.txt") == b"two!"
    assert await files.names("JB-3") == ["a.txt"]


async def test_namespaces_are_apart_and_delete_removes_all(files: FileStore) -> None:
    await put(files, "JB-4", "x", b"4")
    await put(files, "JB-5", "x", b"5")
    await put(files, "JB-5", "../../etc/passwd", b"a name is only a name")
    assert await files.delete_namespace("JB-5") == 2
    assert await files.names("JB-5") == []
    assert await get(files, "JB-4", "x") == b"4"
    with pytest.raises(FileMissing):
        await get(files, "JB-5", "x")
    assert await files.delete_namespace("JB-5") == 0


async def test_directory_store_is_private(tmp_path: Path) -> None:
    files = DirectoryFileStore(str(tmp_path / "files"))
    await put(files, "JB-6", "../escape", b"secret")
    assert not (tmp_path / "escape").exists()
    for dirpath, _dirs, names in os.walk(tmp_path / "files"):
        assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o700
        for n in names:
            assert stat.S_IMODE(os.stat(os.path.join(dirpath, n)).st_mode) == 0o600
