"""The only module that talks to a database driver (motor today; pymongo's async client later).

`open_database(url)` picks the backend from the URL scheme:
  mongodb://, mongodb+srv://  MongoDB through motor
  mongomock://                mongomock-motor (tests; runs the motor code path in memory)
  memory:// or None           the embedded, indexed in-memory engine
"""

from __future__ import annotations

from typing import Any

from .base import Collection, Database, DuplicateKeyError, Filter, Projection, Sort, Update


def _projection(projection: Projection) -> dict[str, int]:
    out = {"_id": 0}
    if projection:
        out.update({p: 1 for p in projection})
    return out


def _sort(sort: Sort | None) -> list[tuple[str, int]] | None:
    return list(sort) if sort else None


class MotorCollection:
    """Adapts a motor (or mongomock-motor) collection to the `Collection` protocol."""

    def __init__(self, coll: Any) -> None:
        self._coll = coll
        import pymongo.errors

        dup: tuple[type[Exception], ...] = (pymongo.errors.DuplicateKeyError,)
        bulk: tuple[type[Exception], ...] = (pymongo.errors.BulkWriteError,)
        try:  # mongomock raises its own exception types
            import mongomock

            dup += (mongomock.DuplicateKeyError,)
            bulk += (mongomock.BulkWriteError,)  # type: ignore[attr-defined]
        except ImportError:
            pass
        self._dup = dup
        self._bulk = bulk

    async def create_index(self, keys: Sort, *, unique: bool = False) -> None:
        await self._coll.create_index(list(keys), unique=unique)

    async def insert_one(self, doc: dict[str, Any]) -> None:
        try:
            await self._coll.insert_one(dict(doc))  # a copy: the driver adds `_id`
        except self._dup as e:
            raise DuplicateKeyError(str(e)) from None

    async def insert_many(self, docs: list[dict[str, Any]]) -> None:
        if not docs:
            return
        try:
            await self._coll.insert_many([dict(d) for d in docs], ordered=True)
        except self._dup + self._bulk as e:
            raise DuplicateKeyError(str(e)) from None

    async def find_one(
        self, filter: Filter, *, projection: Projection = None, sort: Sort | None = None
    ) -> dict[str, Any] | None:
        return await self._coll.find_one(filter, _projection(projection), sort=_sort(sort))

    async def find(
        self,
        filter: Filter,
        *,
        projection: Projection = None,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        cursor = self._coll.find(filter, _projection(projection))
        if sort:
            cursor = cursor.sort(list(sort))
        if limit:
            cursor = cursor.limit(limit)
        return [doc async for doc in cursor]

    async def find_one_and_update(
        self,
        filter: Filter,
        update: Update,
        *,
        sort: Sort | None = None,
        projection: Projection = None,
    ) -> dict[str, Any] | None:
        from pymongo import ReturnDocument

        try:
            return await self._coll.find_one_and_update(
                filter,
                update,
                projection=_projection(projection),
                sort=_sort(sort),
                return_document=ReturnDocument.AFTER,
            )
        except self._dup as e:
            raise DuplicateKeyError(str(e)) from None

    async def update_one(self, filter: Filter, update: Update) -> int:
        res = await self._coll.update_one(filter, update)
        return int(res.matched_count)

    async def update_many(self, filter: Filter, update: Update) -> int:
        res = await self._coll.update_many(filter, update)
        return int(res.matched_count)

    async def count_documents(self, filter: Filter) -> int:
        return int(await self._coll.count_documents(filter))

    async def delete_many(self, filter: Filter) -> int:
        res = await self._coll.delete_many(filter)
        return int(res.deleted_count)


class MotorDatabase:
    def __init__(self, client: Any, name: str) -> None:
        self._client = client
        self._db = client[name]
        self._colls: dict[str, MotorCollection] = {}

    def collection(self, name: str) -> Collection:
        if name not in self._colls:
            self._colls[name] = MotorCollection(self._db[name])
        return self._colls[name]

    async def ping(self) -> None:
        await self._db.command("ping")

    def close(self) -> None:
        self._client.close()


class _MongomockCollection(MotorCollection):
    """mongomock re-runs the *original* filter to fetch the updated document, so it returns
    None whenever the update changes a filtered field: fetch by `_id` instead. (Tests only;
    MongoDB itself is correct.)"""

    async def find_one_and_update(
        self,
        filter: Filter,
        update: Update,
        *,
        sort: Sort | None = None,
        projection: Projection = None,
    ) -> dict[str, Any] | None:
        from pymongo import ReturnDocument

        try:
            before = await self._coll.find_one_and_update(
                filter,
                update,
                projection={"_id": 1},
                sort=_sort(sort),
                return_document=ReturnDocument.BEFORE,
            )
        except self._dup as e:
            raise DuplicateKeyError(str(e)) from None
        if before is None:
            return None
        return await self._coll.find_one({"_id": before["_id"]}, _projection(projection))


class _MongomockDatabase(MotorDatabase):
    def collection(self, name: str) -> Collection:
        if name not in self._colls:
            self._colls[name] = _MongomockCollection(self._db[name])
        return self._colls[name]

    async def ping(self) -> None:  # mongomock has no `ping` command
        await self._db.list_collection_names()

    def close(self) -> None:
        return None


def open_database(url: str | None, name: str = "ewms") -> Database:
    if url is None or url.startswith("memory://"):
        from .memory import MemoryDatabase

        return MemoryDatabase()
    if url.startswith("mongomock://"):
        from mongomock_motor import AsyncMongoMockClient

        return _MongomockDatabase(AsyncMongoMockClient(), name)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from motor.motor_asyncio import AsyncIOMotorClient

        client: Any = AsyncIOMotorClient(url, serverSelectionTimeoutMS=5000, tz_aware=False)
        return MotorDatabase(client, name)
    raise ValueError(f"unsupported database URL scheme: {url.split('://')[0]!r}")
