"""The storage-driver protocol every database backend implements (see docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

Filter = dict[str, Any]
Update = dict[str, Any]
Sort = Sequence[tuple[str, int]]  # (field path, 1 ascending | -1 descending)
Projection = Sequence[str] | None  # field paths to include; None = whole document


class DuplicateKeyError(Exception):
    """An insert or update would break a unique index."""


class Collection(Protocol):
    """A MongoDB-like collection. Documents never carry `_id` in or out.

    Filters use MongoDB query syntax. Updates use `$set`, `$unset`, `$inc` and `$push`
    (with `$each`); dotted paths are allowed. Every returned document is a fresh copy.
    """

    async def create_index(self, keys: Sort, *, unique: bool = False) -> None: ...

    async def insert_one(self, doc: dict[str, Any]) -> None: ...

    async def insert_many(self, docs: list[dict[str, Any]]) -> None:
        """Insert in order; on a duplicate key, raise after inserting the ones before it."""

    async def find_one(
        self, filter: Filter, *, projection: Projection = None, sort: Sort | None = None
    ) -> dict[str, Any] | None: ...

    async def find(
        self,
        filter: Filter,
        *,
        projection: Projection = None,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[dict[str, Any]]: ...

    async def find_one_and_update(
        self,
        filter: Filter,
        update: Update,
        *,
        sort: Sort | None = None,
        projection: Projection = None,
    ) -> dict[str, Any] | None:
        """Atomically update the first match (by `sort`); return it AFTER the update."""

    async def update_one(self, filter: Filter, update: Update) -> int:
        """Return the number of matched documents (0 or 1)."""

    async def update_many(self, filter: Filter, update: Update) -> int:
        """Return the number of matched documents."""

    async def count_documents(self, filter: Filter) -> int: ...

    async def delete_many(self, filter: Filter) -> int: ...


class Database(Protocol):
    def collection(self, name: str) -> Collection: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    def close(self) -> None: ...
