"""The MongoDB driver (motor): the production store, and mongomock-motor in tests.

No multi-document transactions (no replica set needed): a bundle is inserted collection by
collection in the order given, so ops order their writes such that every crash point leaves
a state the background loops repair. Filters pass through unchanged; each single-document
change is atomic on the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pymongo.errors
from pymongo import ReturnDocument

from .base import (
    SCHEMA_VERSION,
    Change,
    Doc,
    DuplicateKey,
    Filter,
    FilterTooComplex,
    Projection,
    QueryTimeout,
    Sort,
    StoreTooNew,
)
from .collections import COLLECTIONS

META = "ewms_meta"
"""Holds {"_id": "schema", "version": N}: the layout version of this database."""


def _projection(projection: Projection) -> dict[str, int]:
    return {"_id": 0, **{p: 1 for p in projection or ()}}


def _update(change: Change) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if change.set:
        out["$set"] = dict(change.set)
    if change.push:
        out["$push"] = {k: {"$each": list(v)} for k, v in change.push.items()}
    return out


class MongoStorage:
    """`Storage` on one MongoDB database of a motor (or mongomock-motor) client."""

    def __init__(self, client: Any, db_name: str) -> None:
        self._client = client
        self._db = client[db_name]

    @property
    def database(self) -> Any:
        """The motor database (the file cache's GridFS bucket lives in it)."""
        return self._db

    @classmethod
    def from_url(cls, url: str, db_name: str) -> MongoStorage:
        from motor.motor_asyncio import AsyncIOMotorClient

        return cls(AsyncIOMotorClient(url, serverSelectionTimeoutMS=5000, tz_aware=False), db_name)

    # -- layout --------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        doc = await self._db[META].find_one({"_id": "schema"})
        return int(doc["version"]) if doc else 0

    async def migrate(self) -> int:
        version = await self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"the database has layout version {version}, newer than this server's "
                f"{SCHEMA_VERSION}: run a newer ewms-server"
            )
        for spec in COLLECTIONS.values():  # idempotent: replicas may do this at the same time
            for ix in spec.indexes:
                await self._db[spec.name].create_index(ix.keys(), unique=ix.unique)
        if 0 < version < 2:  # taskforces in EWMS's form (sqlite_schema._v2 says what)
            tfs = self._db["taskforces"]
            await tfs.update_many({"collector": ""}, {"$set": {"collector": None}})
            await tfs.update_many({"job_event_log_fpath": None}, {"$set": {"job_event_log_fpath": ""}})
        if 0 < version < 3:  # every taskforce shows its task counts and diagnosis (sqlite_schema._v3)
            tfs = self._db["taskforces"]
            zero = {"succeeded": 0, "failed": 0}
            await tfs.update_many({"task_counts": {"$exists": False}}, {"$set": {"task_counts": zero}})
            await tfs.update_many({"diagnosis": {"$exists": False}}, {"$set": {"diagnosis": None}})
        if 0 < version < 4:  # task directives name their secrets, older ones none (sqlite_schema._v4)
            tds = self._db["task_directives"]
            await tds.update_many({"secrets": {"$exists": False}}, {"$set": {"secrets": []}})
        if 0 < version < 5:  # every workflow shows its notify_url (sqlite_schema._v5)
            wfs = self._db["workflows"]
            await wfs.update_many({"notify_url": {"$exists": False}}, {"$set": {"notify_url": None}})
            await wfs.update_many({"notify_watch": {"$exists": False}}, {"$set": {"notify_watch": False}})
        await self._db[META].update_one({"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True)
        return SCHEMA_VERSION

    async def ping(self) -> None:
        await self._db.command("ping")

    async def close(self) -> None:
        self._client.close()

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, coll: str, filter: Filter, *, projection: Projection = None) -> Doc | None:
        doc: Doc | None = await self._db[coll].find_one(dict(filter), _projection(projection))
        return doc

    async def find(
        self,
        coll: str,
        filter: Filter,
        *,
        projection: Projection = None,
        sort: Sort | None = None,
        limit: int = 0,
        budget_s: float | None = None,
    ) -> list[Doc]:
        cursor = self._db[coll].find(dict(filter), _projection(projection))
        if sort:
            cursor = cursor.sort(list(sort))
        if limit:
            cursor = cursor.limit(limit)
        if budget_s is not None:
            cursor = cursor.max_time_ms(max(1, int(budget_s * 1000)))
        try:
            return [doc async for doc in cursor]
        except pymongo.errors.ExecutionTimeout:
            raise QueryTimeout(f"stopped after {budget_s:g} s") from None
        except pymongo.errors.OperationFailure as e:
            if budget_s is not None and e.code == 2:  # BadValue: a client's filter MongoDB refuses
                raise FilterTooComplex(f"MongoDB refused the filter: {e.details or e}") from None
            raise

    async def count(self, coll: str, filter: Filter) -> int:
        return int(await self._db[coll].count_documents(dict(filter)))

    async def count_by(self, coll: str, fields: Sequence[str], filter: Filter) -> dict[tuple[Any, ...], int]:
        indexed = set(COLLECTIONS[coll].columns())
        if not fields or not set(fields) <= indexed:
            raise ValueError(f"count_by on {coll}: only indexed fields, not {sorted(fields)}")
        group = {"_id": {f"k{i}": f"${f}" for i, f in enumerate(fields)}, "n": {"$sum": 1}}
        out: dict[tuple[Any, ...], int] = {}
        async for row in self._db[coll].aggregate([{"$match": dict(filter)}, {"$group": group}]):
            key = tuple(row["_id"].get(f"k{i}") for i in range(len(fields)))
            out[key] = out.get(key, 0) + int(row["n"])
        return out

    # -- writes --------------------------------------------------------------------------------

    async def insert(self, coll: str, docs: Sequence[Mapping[str, Any]]) -> None:
        if not docs:
            return
        try:  # copies: the driver adds `_id`
            await self._db[coll].insert_many([dict(d) for d in docs], ordered=True)
        except (pymongo.errors.DuplicateKeyError, pymongo.errors.BulkWriteError) as e:
            raise DuplicateKey(str(e)) from None

    async def insert_bundle(self, bundle: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> None:
        for coll, docs in bundle:
            await self.insert(coll, docs)

    async def claim(self, coll: str, filter: Filter, *, sort: Sort, change: Change) -> Doc | None:
        # the document as it was, changed here exactly as the server changed it: one round
        # trip, and the same on mongomock (whose AFTER re-runs the filter, and which updates
        # the wrong document when the projection leaves out `_id`)
        before = await self._db[coll].find_one_and_update(
            dict(filter), _update(change), sort=list(sort), return_document=ReturnDocument.BEFORE
        )
        if before is None:
            return None
        before.pop("_id", None)
        return change.apply(before)

    async def transition(self, coll: str, filter: Filter, change: Change) -> bool:
        res = await self._db[coll].update_one(dict(filter), _update(change))
        return bool(res.matched_count)

    async def update_where(self, coll: str, filter: Filter, change: Change) -> int:
        res = await self._db[coll].update_many(dict(filter), _update(change))
        return int(res.matched_count)

    async def update_each(self, coll: str, updates: Sequence[tuple[Filter, Change]]) -> list[bool]:
        return [await self.transition(coll, f, c) for f, c in updates]

    async def delete_where(self, coll: str, filter: Filter) -> int:
        res = await self._db[coll].delete_many(dict(filter))
        return int(res.deleted_count)
