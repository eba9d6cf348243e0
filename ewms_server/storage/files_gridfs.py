"""The file cache in MongoDB GridFS (motor's AsyncIOMotorGridFSBucket), bucket `ewms_files`.

A file is stored under `<namespace>/<name>` with both parts in its metadata. GridFS writes the
file document only when the upload closes, so a file is visible all at once or not at all; a
new version replaces the old ones after it is complete. Tests run it against a real MongoDB
only (EWMS_TEST_MONGODB_URL): mongomock has no GridFS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .files_base import CHUNK, Digest, FileMissing, StoredFile

BUCKET = "ewms_files"


class GridFSWriter:
    def __init__(self, store: GridFSFileStore, namespace: str, name: str) -> None:
        self._store = store
        self._ns, self._name = namespace, name
        self._digest = Digest()
        self._grid_in: Any = None
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._grid_in is None:
            self._grid_in = await self._store._open(self._ns, self._name)
        self._digest.update(data)
        await self._grid_in.write(data)

    async def commit(self) -> StoredFile:
        if self._grid_in is None:
            self._grid_in = await self._store._open(self._ns, self._name)
        await self._grid_in.close()
        self._done = True
        await self._store._drop_older(self._ns, self._name, self._grid_in._id)
        return self._digest.result()

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._grid_in is not None:
            await self._grid_in.abort()


class GridFSFileStore:
    """`FileStore` in one MongoDB database of a motor client."""

    def __init__(self, db: Any) -> None:
        from motor.motor_asyncio import AsyncIOMotorGridFSBucket

        self._db = db
        self._bucket = AsyncIOMotorGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=CHUNK)
        self._indexed = False

    async def _index(self) -> None:
        if not self._indexed:
            await self._db[f"{BUCKET}.files"].create_index([("metadata.ns", 1), ("metadata.name", 1)])
            self._indexed = True

    async def _open(self, namespace: str, name: str) -> Any:
        await self._index()
        return self._bucket.open_upload_stream(
            f"{namespace}/{name}", metadata={"ns": namespace, "name": name}
        )

    async def _versions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        cursor = self._db[f"{BUCKET}.files"].find(
            {"metadata.ns": namespace, "metadata.name": name}, {"_id": 1, "uploadDate": 1}
        )
        return sorted(await cursor.to_list(None), key=lambda d: (d["uploadDate"], d["_id"]))

    async def _drop_older(self, namespace: str, name: str, keep: Any) -> None:
        for doc in await self._versions(namespace, name):
            if doc["_id"] != keep:
                await self._bucket.delete(doc["_id"])

    def writer(self, namespace: str, name: str) -> GridFSWriter:
        return GridFSWriter(self, namespace, name)

    async def read(self, namespace: str, name: str, start: int = 0) -> AsyncIterator[bytes]:
        await self._index()
        versions = await self._versions(namespace, name)
        if not versions:
            raise FileMissing(f"{namespace}: no file {name!r}")
        grid_out = await self._bucket.open_download_stream(versions[-1]["_id"])
        if start:
            grid_out.seek(start)
        while True:
            chunk: bytes = await grid_out.read(CHUNK)
            if not chunk:
                return
            yield chunk

    async def names(self, namespace: str) -> list[str]:
        await self._index()
        cursor = self._db[f"{BUCKET}.files"].find({"metadata.ns": namespace}, {"metadata.name": 1})
        return sorted({d["metadata"]["name"] for d in await cursor.to_list(None)})

    async def delete_namespace(self, namespace: str) -> int:
        await self._index()
        cursor = self._db[f"{BUCKET}.files"].find({"metadata.ns": namespace}, {"_id": 1, "metadata.name": 1})
        docs = await cursor.to_list(None)
        for d in docs:
            await self._bucket.delete(d["_id"])
        return len({d["metadata"]["name"] for d in docs})

    async def close(self) -> None:
        return None
