"""The store the server uses: any driver, with every write checked against the schema first.

Only what a write touches is checked (a whole document on insert, the changed fields and
appended items on update), so a bug cannot store a malformed document on either driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..schema import OpenAPI
from .base import Change, Doc, Filter, Projection, Sort, Storage


class CheckedStorage:
    """`Storage` that validates writes, then hands every call to `inner`."""

    def __init__(self, inner: Storage, schema: OpenAPI) -> None:
        self.inner = inner
        self.schema = schema

    async def migrate(self) -> int:
        return await self.inner.migrate()

    async def schema_version(self) -> int:
        return await self.inner.schema_version()

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

    async def get(self, coll: str, filter: Filter, *, projection: Projection = None) -> Doc | None:
        return await self.inner.get(coll, filter, projection=projection)

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
        return await self.inner.find(
            coll, filter, projection=projection, sort=sort, limit=limit, budget_s=budget_s
        )

    async def count(self, coll: str, filter: Filter) -> int:
        return await self.inner.count(coll, filter)

    async def count_by(self, coll: str, fields: Sequence[str], filter: Filter) -> dict[tuple[Any, ...], int]:
        return await self.inner.count_by(coll, fields, filter)

    async def insert(self, coll: str, docs: Sequence[Mapping[str, Any]]) -> None:
        await self.insert_bundle([(coll, docs)])

    async def insert_bundle(self, bundle: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> None:
        for coll, docs in bundle:
            for doc in docs:
                self.schema.check_document(coll, doc)
        await self.inner.insert_bundle(bundle)

    async def claim(self, coll: str, filter: Filter, *, sort: Sort, change: Change) -> Doc | None:
        self.schema.check_change(coll, change)
        return await self.inner.claim(coll, filter, sort=sort, change=change)

    async def transition(self, coll: str, filter: Filter, change: Change) -> bool:
        self.schema.check_change(coll, change)
        return await self.inner.transition(coll, filter, change)

    async def update_where(self, coll: str, filter: Filter, change: Change) -> int:
        self.schema.check_change(coll, change)
        return await self.inner.update_where(coll, filter, change)

    async def update_each(self, coll: str, updates: Sequence[tuple[Filter, Change]]) -> list[bool]:
        for _, change in updates:
            self.schema.check_change(coll, change)
        return await self.inner.update_each(coll, updates)

    async def delete_where(self, coll: str, filter: Filter) -> int:
        return await self.inner.delete_where(coll, filter)
