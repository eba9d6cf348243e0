"""The embedded, indexed, in-memory database: the default when no MongoDB URL is configured.

mongomock scans and deep-copies every document on every query; this engine answers equality and
`$in` conditions from hash indexes and copies documents with orjson instead of `deepcopy`.

Design, and where it knowingly departs from MongoDB:
- A document is stored as its orjson bytes, so handing out a fresh copy is one `orjson.loads`
  (~8x cheaper than `deepcopy`), plus a flat record of its top-level scalar fields (`record_of`
  in `memory_match`), which the fast matcher, the sort keys and simple projections read; the
  bytes are decoded only for dotted paths, non-scalar fields, mongomock's matcher and updates.
  Bytes, strings, numbers and dicts of them are not tracked by CPython's garbage collector, and
  neither are the index entries and cached keys (ints, tuples of scalars): stored documents add
  no work to a full collection (kept as nested dicts, the ~15,000 documents of 5,000 workflows
  made each full collection take ~100 ms, a latency spike). Documents that do not survive a
  JSON round trip unchanged (datetimes, tuples, bytes...) are kept as (immutable) dicts instead,
  copied out with `deepcopy`.
- Matching is mongomock's matcher (`filter_applies`), so operators behave as under mongomock,
  including its Python equality (`{"a": 1}` matches `{"a": True}`, unlike MongoDB). Equivalent
  fast paths decide instead: plain scalar equality / `$eq` / `$in` (through index keys), and
  simple comparisons (`$lt`... `$ne`) of a top-level field with a scalar, evaluated in Python with
  MongoDB's type bracketing (see `memory_match`). When all the candidates are needed, each
  condition is checked over all of them at once, on remembered top-level field values.
- Hash indexes, single or compound, are multikey (arrays index each element and the whole array)
  and treat a missing field as null, like MongoDB. A compound index also answers equality on any
  prefix of its fields. Per query we use the usable index with the fewest candidates.
- A unique violation leaves the store unchanged. `update_many` is all-or-nothing on a violation
  (MongoDB would keep the documents updated before the failing one).
- Updates support `$set`, `$unset`, `$inc` and `$push` (with `$each` only); anything else, and
  anything MongoDB would reject (conflicting paths, `$inc` of a non-number...), is a ValueError.
- Sorting follows MongoDB's type order (missing = null first ascending; arrays sort by their
  smallest element ascending and largest descending) and is stable. Sort keys are remembered
  per document until it changes (as tuples of scalars, except on fields holding documents,
  arrays of them, or dates sorted descending: rare, and collected like any object).
- Modules: `memory_index` (indexes, index keys), `memory_match` (query plans, fast matching),
  `memory_sort` (sort keys), `memory_update` (update operators, copying in).
- Projections are inclusion lists; an empty list means the whole document (MongoDB's `{}`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from .base import DuplicateKeyError, Filter, Projection, Sort, Update
from .memory_index import Index
from .memory_match import MISSING, NESTED, Plan, record_of
from .memory_sort import SortKey, check_sort, sort_key
from .memory_update import ParsedUpdate, copy_in, split_path, to_blob

__all__ = ["DuplicateKeyError", "MemoryCollection", "MemoryDatabase"]

Doc = dict[str, Any]
_CACHES = 16  # distinct sorts (and fields) whose per-document keys (values) are remembered


# --- projection -------------------------------------------------------------------------------


def _projection_tree(projection: Projection) -> dict[str, Any] | None:
    """{"a": True, "b": {"c": True}} for ["a", "b.c"]; None for the whole document."""
    if not projection:
        return None
    if isinstance(projection, str):
        raise TypeError("a projection is a list of field paths, not a string")
    tree: dict[str, Any] = {}
    for path in projection:
        parts = split_path(path) if path != "_id" else ("_id",)
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if node is True:
                raise ValueError(f"projection path {path!r} collides with a shorter path")
        if node.get(parts[-1], True) is not True:
            raise ValueError(f"projection path {path!r} collides with a longer path")
        node[parts[-1]] = True
    return tree


def _project(value: Any, tree: dict[str, Any]) -> Any:
    """MongoDB inclusion projection; through arrays it keeps only their (projected) documents."""
    if isinstance(value, list):
        return [_project(v, tree) for v in value if isinstance(v, (dict, list))]
    out = {}
    for key, sub in value.items():
        spec = tree.get(key)
        if spec is True:
            out[key] = sub
        elif spec is not None and isinstance(sub, (dict, list)):
            out[key] = _project(sub, spec)
    return out


# --- the collection ---------------------------------------------------------------------------


class MemoryCollection:
    """An in-memory collection implementing `base.Collection`; see the module docstring."""

    def __init__(self) -> None:
        # doc id -> record (top-level scalars, see `record_of`); insertion order is the natural
        # order. Each document is also in exactly one of `_blobs` and `_raw`.
        self._records: dict[int, Doc] = {}
        self._blobs: dict[int, bytes] = {}  # orjson bytes of the JSON-safe documents
        self._raw: dict[int, Doc] = {}  # the others (datetimes, tuples...), as private copies
        self._indexes: dict[tuple[str, ...], Index] = {}
        # sort -> (key function, doc id -> key); a document's keys are dropped when it changes
        self._sort_keys: dict[tuple[tuple[str, int], ...], tuple[SortKey, dict[int, tuple[Any, ...]]]] = {}
        # top-level field -> doc id -> value, for conditions; dropped like the sort keys
        self._columns: dict[str, dict[int, Any]] = {}
        self._next_id = 0

    # -- internals (all synchronous: nothing can interleave with a read-modify-write) --

    def _full(self, doc_id: int) -> Doc:
        """The whole document, for reading only (a stored raw one is not copied)."""
        blob = self._blobs.get(doc_id)
        return orjson.loads(blob) if blob is not None else self._raw[doc_id]

    def _view(self, doc_id: int, paths: Iterable[str]) -> Doc:
        """What reading `paths` needs: the record if they are top-level scalars (or missing),
        else the whole document (for reading only)."""
        record = self._records[doc_id]
        for path in paths:
            if "." in path or record.get(path) is NESTED:
                return self._full(doc_id)
        return record

    def _export(self, doc_id: int, tree: dict[str, Any] | None) -> Doc:
        blob = self._blobs.get(doc_id)
        if tree is None:
            return orjson.loads(blob) if blob is not None else copy.deepcopy(self._raw[doc_id])
        record = self._records[doc_id]
        if all(spec is True and record.get(key) is not NESTED for key, spec in tree.items()):
            return {key: value for key, value in record.items() if key in tree}  # scalars only
        if blob is not None:
            return _project(orjson.loads(blob), tree)  # a fresh copy already
        return copy.deepcopy(_project(self._raw[doc_id], tree))

    def _candidates(self, plan: Plan) -> tuple[Iterable[int], bool, set[str]]:
        """Ids to examine, whether they are in natural order (index lookups are not), and the
        exact conditions the index already proved."""
        best: tuple[list[int], int, Index] | None = None
        for index in self._indexes.values():
            found = index.lookup(plan.probes)
            if found is not None and (best is None or len(found[0]) < len(best[0])):
                best = (found[0], found[1], index)
        if best is None:
            return self._records.keys(), True, set()
        ids, used, index = best
        proved = {f for f in index.fields[:used] if f in plan.exact}  # probed with exact keys
        return ids, False, proved

    def _matching(self, filter: Filter) -> Iterator[int]:
        """The matching ids in natural order, lazily (for a limit without sort)."""
        plan = Plan(filter)
        ids, ordered, proved = self._candidates(plan)
        if not ordered:
            ids = sorted(ids)
        test = plan.test(proved, self._records, self._full)
        if test is None:
            return iter(ids)  # the index answered the whole filter
        return (doc_id for doc_id in ids if test(doc_id))

    def _all_matching(self, filter: Filter, ordered: bool = True) -> list[int]:
        """The matching ids, in natural order if `ordered`; faster than `_matching` when all of
        them are needed (each condition is checked over all the candidates at once)."""
        plan = Plan(filter)
        candidates, in_order, proved = self._candidates(plan)
        ids = plan.select(list(candidates), self._records, self._full, self._column, proved)
        if ordered and not in_order:
            ids.sort()
        return ids

    def _select(self, filter: Filter, sort: Sort | None, limit: int) -> list[int]:
        spec = check_sort(sort)
        if not spec:
            if limit:
                return list(itertools.islice(self._matching(filter), limit))
            return self._all_matching(filter)
        ids = self._all_matching(filter, ordered=False)  # sort keys end with the id: no ties
        compute, keys = self._sort_cache(spec)
        paths = [path for path, _ in spec]
        for doc_id in itertools.filterfalse(keys.__contains__, ids):
            keys[doc_id] = (*compute(self._view(doc_id, paths)), doc_id)
        if limit == 1:  # claiming work, the server's hottest path
            best = min(ids, key=keys.__getitem__, default=None)
            return [] if best is None else [best]
        ids.sort(key=keys.__getitem__)
        return ids[:limit] if limit else ids

    def _sort_cache(self, spec: list[tuple[str, int]]) -> tuple[SortKey, dict[int, tuple[Any, ...]]]:
        """The key function of a sort, and the keys already computed (sorts repeat)."""
        name = tuple((path, direction) for path, direction in spec)
        found = self._sort_keys.get(name)
        if found is None:
            if len(self._sort_keys) >= _CACHES:
                del self._sort_keys[next(iter(self._sort_keys))]  # the oldest
            found = self._sort_keys[name] = (sort_key(spec), {})
        return found

    def _column(self, path: str, ids: list[int]) -> list[Any]:
        """The values of the top-level field `path` (`MISSING` if absent, `NESTED` if not a
        scalar) of the documents `ids`; remembered, since conditions on a field repeat (and a
        cached value is cheaper to reach)."""
        column = self._columns.get(path)
        if column is None:
            if len(self._columns) >= _CACHES:
                del self._columns[next(iter(self._columns))]  # the oldest
            column = self._columns[path] = {}
        records = self._records
        for doc_id in itertools.filterfalse(column.__contains__, ids):
            column[doc_id] = records[doc_id].get(path, MISSING)
        return list(map(column.__getitem__, ids))

    def _forget(self, ids: Iterable[int]) -> None:
        """Drop the cached sort keys and field values of changed (or deleted) documents."""
        for _, keys in self._sort_keys.values():
            for doc_id in ids:
                keys.pop(doc_id, None)
        for column in self._columns.values():
            for doc_id in ids:
                column.pop(doc_id, None)

    def _write(self, changes: dict[int, tuple[Doc, bytes | None]], indexes: Iterable[Index]) -> None:
        """Store new versions of documents (new or updated) after checking unique indexes; a
        document without bytes is kept as is, so it must be private."""
        staged = [(index, {i: index.keys_of(doc) for i, (doc, _) in changes.items()}) for index in indexes]
        for index, keys in staged:
            if index.unique:
                index.check(keys)
        for index, keys in staged:
            for doc_id, doc_keys in keys.items():
                if not index.has(doc_id, doc_keys):
                    if doc_id in index.entries:
                        index.remove(doc_id)
                    index.add(doc_id, doc_keys)
        for doc_id, (doc, blob) in changes.items():
            self._records[doc_id] = record_of(doc)
            if blob is not None:
                self._blobs[doc_id] = blob
                self._raw.pop(doc_id, None)
            else:
                self._raw[doc_id] = doc
                self._blobs.pop(doc_id, None)
        self._forget(changes)

    def _insert(self, doc: Doc) -> None:
        if not isinstance(doc, dict):
            raise TypeError(f"a document must be a dict, not {type(doc).__name__}")
        if "_id" in doc:
            raise ValueError("documents must not carry `_id`")
        self._write({self._next_id: copy_in(doc)}, self._indexes.values())
        self._next_id += 1

    def _update(self, ids: list[int], update: ParsedUpdate) -> Doc | None:
        """Update the documents `ids`; return the last one's new version if it is not stored
        (it was decoded from bytes: the caller may have it)."""
        changes = {}
        new: Doc | None = None
        for doc_id in ids:
            new, exact = update.apply(self._full(doc_id))
            # stays JSON-safe only if it was and the operands are (else: deepcopy from now on)
            safe = exact and update.json_safe and doc_id in self._blobs
            changes[doc_id] = (new, to_blob(new) if safe else None)
        self._write(changes, [ix for ix in self._indexes.values() if update.touches(ix.fields)])
        return new if ids and changes[ids[-1]][1] is not None else None

    # -- the protocol --

    async def create_index(self, keys: Sort, *, unique: bool = False) -> None:
        spec = check_sort(keys)
        fields = tuple(".".join(split_path(path)) for path, _ in spec)
        if not fields or len(set(fields)) != len(fields):
            raise ValueError(f"invalid index keys {keys!r}")
        if fields in self._indexes:
            if self._indexes[fields].unique != unique:
                raise ValueError(f"an index on {fields} already exists with other options")
            return
        index = Index(fields, unique)
        staged = {doc_id: index.keys_of(self._view(doc_id, fields)) for doc_id in self._records}
        if unique:
            index.check(staged)
        for doc_id, doc_keys in staged.items():
            index.add(doc_id, doc_keys)
        self._indexes[fields] = index

    async def insert_one(self, doc: Doc) -> None:
        self._insert(doc)

    async def insert_many(self, docs: list[Doc]) -> None:
        """Insert in order; on a duplicate key, raise after inserting the ones before it."""
        for doc in docs:
            self._insert(doc)

    async def find_one(
        self, filter: Filter, *, projection: Projection = None, sort: Sort | None = None
    ) -> Doc | None:
        ids = self._select(filter, sort, 1)
        return self._export(ids[0], _projection_tree(projection)) if ids else None

    async def find(
        self,
        filter: Filter,
        *,
        projection: Projection = None,
        sort: Sort | None = None,
        limit: int = 0,
    ) -> list[Doc]:
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = no limit)")
        tree = _projection_tree(projection)
        return [self._export(i, tree) for i in self._select(filter, sort, limit)]

    async def find_one_and_update(
        self,
        filter: Filter,
        update: Update,
        *,
        sort: Sort | None = None,
        projection: Projection = None,
    ) -> Doc | None:
        """Atomically update the first match (by `sort`); return it AFTER the update."""
        compiled, tree = ParsedUpdate(update), _projection_tree(projection)
        ids = self._select(filter, sort, 1)
        if not ids:
            return None
        new = self._update(ids, compiled)
        if new is not None and tree is None:
            return new  # a fresh decoded copy that nothing else refers to
        return self._export(ids[0], tree)

    async def update_one(self, filter: Filter, update: Update) -> int:
        compiled = ParsedUpdate(update)
        ids = self._select(filter, None, 1)
        self._update(ids, compiled)
        return len(ids)

    async def update_many(self, filter: Filter, update: Update) -> int:
        compiled = ParsedUpdate(update)
        ids = self._select(filter, None, 0)
        self._update(ids, compiled)
        return len(ids)

    async def count_documents(self, filter: Filter) -> int:
        if filter == {}:
            return len(self._records)
        return len(self._all_matching(filter, ordered=False))

    async def delete_many(self, filter: Filter) -> int:
        ids = self._all_matching(filter, ordered=False)
        for doc_id in ids:
            for index in self._indexes.values():
                index.remove(doc_id)
            del self._records[doc_id]
            if self._blobs.pop(doc_id, None) is None:
                del self._raw[doc_id]
        self._forget(ids)
        return len(ids)


class MemoryDatabase:
    """A set of named `MemoryCollection`s living in this process (`base.Database`)."""

    def __init__(self) -> None:
        self._collections: dict[str, MemoryCollection] = {}
        self._closed = False

    def collection(self, name: str) -> MemoryCollection:
        if name not in self._collections:
            self._collections[name] = MemoryCollection()
        return self._collections[name]

    async def ping(self) -> None:
        if self._closed:
            raise ConnectionError("the in-memory database is closed")

    def close(self) -> None:
        self._closed = True
