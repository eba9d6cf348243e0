"""The storage seam: the operations the server performs on its store, as one Protocol.

Not a database emulation: these are exactly the calls `ewms_server.ops` and the loops make.
Filters use the allow-listed MongoDB filter language of `query_filter` (passed through on
MongoDB, compiled to SQL on SQLite); writes are `Change`s (set top-level fields, append to
arrays). Documents never carry `_id` in or out; every returned document is a fresh copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Doc = dict[str, Any]
Filter = Mapping[str, Any]
Sort = Sequence[tuple[str, int]]
"""(field, 1 ascending | -1 descending); only fields the collection table indexes."""
Projection = Sequence[str] | None
"""Field paths to include (MongoDB inclusion projection); None = the whole document."""

SCHEMA_VERSION = 7
"""The store layout this code writes; `migrate` brings older stores up to it (2: taskforces
in EWMS's form; 3: the `workflow_progress` collection; 4: the `secrets` collection; 5: the
`webhook_outbox` collection and workflows' `notify_url`; 6: `quarantine` and `machine_stats`; 7: the `jobs` collection)."""


@dataclass(frozen=True)
class Change:
    """What an update writes: top-level fields to set, items to append to array fields."""

    set: Mapping[str, Any] = field(default_factory=dict)
    push: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def apply(self, doc: Doc) -> Doc:
        """The same change made to a document in memory (drivers that read-modify-write)."""
        doc.update(self.set)
        for name, items in self.push.items():
            doc[name] = [*doc.get(name, []), *items]
        return doc


class DuplicateKey(Exception):
    """An insert would repeat a unique id."""


class StoreTooNew(Exception):
    """The store was written by a newer version of this code; refusing to touch it."""


class QueryTimeout(Exception):
    """A budgeted read ran past its time budget and was stopped."""


class FilterTooComplex(Exception):
    """The store cannot take this filter (nested deeper than its parser allows)."""


class Storage(Protocol):
    """One store holding the collections of `collections.COLLECTIONS`."""

    async def migrate(self) -> int:
        """Create or upgrade the layout to SCHEMA_VERSION (safe to run from several processes
        at once); return the version. Raise StoreTooNew on a store newer than the code."""

    async def schema_version(self) -> int:
        """The layout version recorded in the store (0 for an empty store)."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    async def close(self) -> None: ...

    async def get(self, coll: str, filter: Filter, *, projection: Projection = None) -> Doc | None:
        """The first matching document (in insertion order), or None."""

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
        """Matching documents, by `sort` (else insertion order), at most `limit` (0 = all).
        With `budget_s`, raise QueryTimeout once the store has worked that long."""

    async def count(self, coll: str, filter: Filter) -> int: ...

    async def count_by(self, coll: str, fields: Sequence[str], filter: Filter) -> dict[tuple[Any, ...], int]:
        """How many documents match, grouped by the values of `fields` -> {(value, ...): n}.
        Indexed fields only (ValueError otherwise): the count reads an index, never the
        documents, so it stays cheap on a large store. A missing field groups as None."""

    async def insert(self, coll: str, docs: Sequence[Mapping[str, Any]]) -> None:
        """Insert in order. On a duplicate id raise DuplicateKey: SQLite writes none of them,
        MongoDB keeps the ones before it."""

    async def insert_bundle(self, bundle: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> None:
        """Insert into several collections: one transaction on SQLite; on MongoDB in the order
        given (no transactions: put last what makes the rest visible)."""

    async def claim(self, coll: str, filter: Filter, *, sort: Sort, change: Change) -> Doc | None:
        """Atomically change the first match by `sort` and return it as changed (a lease)."""

    async def transition(self, coll: str, filter: Filter, change: Change) -> bool:
        """Compare-and-set: change the first document matching `filter`; False if none did."""

    async def update_where(self, coll: str, filter: Filter, change: Change) -> int:
        """Change every matching document; return how many matched."""

    async def update_each(self, coll: str, updates: Sequence[tuple[Filter, Change]]) -> list[bool]:
        """Several compare-and-sets in one call (one transaction on SQLite); which matched."""

    async def delete_where(self, coll: str, filter: Filter) -> int:
        """Delete every matching document; return how many."""
