"""The embedded, indexed, in-memory database: the default when no MongoDB URL is configured.

mongomock scans and deep-copies every document on every query; this engine answers equality and
`$in` conditions from hash indexes and copies documents with orjson instead of `deepcopy`.

Design, and where it knowingly departs from MongoDB:
- Each stored document is immutable once stored: updates build a new one that shares untouched
  sub-documents with the old one. Beside it we keep its orjson bytes, so handing out a fresh copy
  is one `orjson.loads` (~8x cheaper than `deepcopy`). Documents that do not survive a JSON round
  trip unchanged (datetimes, tuples, bytes...) are stored without bytes and copied with `deepcopy`.
- Matching is mongomock's matcher (`filter_applies`), so operators behave as under mongomock,
  including its Python equality (`{"a": 1}` matches `{"a": True}`, unlike MongoDB). Plain scalar
  equality / `$eq` / `$in` conditions are checked by an equivalent fast path instead.
- Hash indexes, single or compound, are multikey (arrays index each element and the whole array)
  and treat a missing field as null, like MongoDB. A compound index also answers equality on any
  prefix of its fields. Per query we use the usable index with the fewest candidates.
- A unique violation leaves the store unchanged. `update_many` is all-or-nothing on a violation
  (MongoDB would keep the documents updated before the failing one).
- Updates support `$set`, `$unset`, `$inc` and `$push` (with `$each` only); anything else, and
  anything MongoDB would reject (conflicting paths, `$inc` of a non-number...), is a ValueError.
- Sorting follows MongoDB's type order (missing = null first ascending; arrays sort by their
  smallest element ascending and largest descending) and is stable.
- Projections are inclusion lists; an empty list means the whole document (MongoDB's `{}`).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

import orjson
from mongomock.filtering import NOTHING, BsonComparable, filter_applies, iter_key_candidates

from .base import DuplicateKeyError, Filter, Projection, Sort, Update

Doc = dict[str, Any]
_SCALARS = (str, int, float)  # bool is an int
_SEQ, _MAP = object(), object()  # tags that keep array/document index keys apart from scalars
_MAX_PROBES = 1024  # beyond this many key combinations an index lookup is not worth it
_UPDATE_OPS = ("$set", "$unset", "$inc", "$push")
_SORT_CACHES = 16  # distinct sorts whose per-document keys are remembered


# --- index keys -------------------------------------------------------------------------------


def _key(value: Any) -> Any:
    """A hashable stand-in for `value`, equal for values that Python (so mongomock) finds equal."""
    if value is None or value is NOTHING:
        return None
    if isinstance(value, (list, tuple)):
        return (_SEQ, tuple(map(_key, value)))
    if isinstance(value, dict):
        return (_MAP, frozenset((k, _key(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return object()  # equal to nothing: such a value is never found through an index
    return value


def _values(doc: Doc, path: str) -> list[Any]:
    """The values `path` reaches, as the matcher sees them (arrays of documents fan out)."""
    if "." not in path:
        return [doc.get(path, NOTHING)]
    return list(iter_key_candidates(path, doc))


def _field_keys(doc: Doc, path: str) -> set[Any]:
    """Index keys of one field: its value, and each element when it is an array."""
    keys: set[Any] = set()
    for value in _values(doc, path) or [NOTHING]:
        keys.add(_key(value))
        if isinstance(value, (list, tuple)):
            keys.update(map(_key, value))
    return keys


def _exact_keys(cond: Any) -> frozenset[Any] | None:
    """Keys of a condition decided exactly like the matcher would: scalar `==`, `$eq` or `$in`."""
    if isinstance(cond, _SCALARS):
        return frozenset((cond,)) if cond == cond else None  # NaN equals nothing
    if isinstance(cond, dict) and len(cond) == 1:
        if "$eq" in cond:
            return _exact_keys(cond["$eq"])
        values = cond.get("$in")
        if isinstance(values, (list, tuple)) and all(
            isinstance(v, _SCALARS) and v == v for v in values
        ):
            return frozenset(values)
    return None


def _literal_probe(value: Any) -> frozenset[Any] | None:
    if isinstance(value, dict) and any(str(k).startswith("$") for k in value):
        return None
    if isinstance(value, re.Pattern) or type(value).__name__ == "Regex":
        return None  # a regex matches, it does not equal: let the matcher scan
    return frozenset((_key(value),))


def _probe_keys(cond: Any) -> frozenset[Any] | None:
    """Index keys covering every document `cond` can match (a superset), or None if unknown."""
    exact = _exact_keys(cond)
    if exact is not None:
        return exact
    if isinstance(cond, dict) and cond and all(str(k).startswith("$") for k in cond):
        if "$eq" in cond:
            return _literal_probe(cond["$eq"])
        if isinstance(cond.get("$in"), (list, tuple)):
            probes = [_literal_probe(v) for v in cond["$in"]]
            if all(p is not None for p in probes):
                return frozenset().union(*probes)  # type: ignore[arg-type]
        return None
    return _literal_probe(cond)


def _matches_exact(doc: Doc, path: str, keys: frozenset[Any]) -> bool:
    if "." not in path:
        value = doc.get(path, NOTHING)
        if isinstance(value, _SCALARS):
            return value in keys
    return not keys.isdisjoint(_field_keys(doc, path))


class _Plan:
    """A filter split into fast exact conditions, index probes, and the rest for the matcher."""

    __slots__ = ("exact", "probes", "residual")

    def __init__(self, filter: Filter) -> None:
        if not isinstance(filter, dict):
            raise TypeError(f"filter must be a dict, not {type(filter).__name__}")
        self.exact: dict[str, frozenset[Any]] = {}
        self.probes: dict[str, frozenset[Any]] = {}
        self.residual: Filter = {}
        for path, cond in filter.items():
            keys = None if path.startswith("$") else _exact_keys(cond)
            if keys is not None:
                self.exact[path] = self.probes[path] = keys
                continue
            self.residual[path] = cond
            if path == "$and" and isinstance(cond, list):
                self._harvest(cond)
            elif not path.startswith("$") and (probe := _probe_keys(cond)) is not None:
                self.probes[path] = probe

    def _harvest(self, clauses: list[Any]) -> None:
        """Equality conditions inside a top-level `$and` still narrow the candidates."""
        for clause in clauses:
            for path, cond in clause.items() if isinstance(clause, dict) else ():
                if path == "$and" and isinstance(cond, list):
                    self._harvest(cond)
                elif not path.startswith("$") and path not in self.probes:
                    if (probe := _probe_keys(cond)) is not None:
                        self.probes[path] = probe


class _Index:
    """A hash index: for each prefix of its fields, key tuple -> ids of the documents having it."""

    __slots__ = ("fields", "unique", "maps", "entries")

    def __init__(self, fields: tuple[str, ...], unique: bool) -> None:
        self.fields = fields
        self.unique = unique
        self.maps: list[dict[tuple[Any, ...], set[int]]] = [{} for _ in fields]
        self.entries: dict[int, frozenset[tuple[Any, ...]]] = {}

    def keys_of(self, doc: Doc) -> frozenset[tuple[Any, ...]]:
        return frozenset(itertools.product(*(_field_keys(doc, f) for f in self.fields)))

    def add(self, doc_id: int, keys: frozenset[tuple[Any, ...]]) -> None:
        self.entries[doc_id] = keys
        for n, mapping in enumerate(self.maps, 1):
            for key in keys:
                mapping.setdefault(key[:n], set()).add(doc_id)

    def remove(self, doc_id: int) -> None:
        keys = self.entries.pop(doc_id)
        for n, mapping in enumerate(self.maps, 1):
            for key in keys:
                ids = mapping.get(key[:n])
                if ids is not None:
                    ids.discard(doc_id)
                    if not ids:
                        del mapping[key[:n]]

    def check(self, staged: dict[int, frozenset[tuple[Any, ...]]]) -> None:
        """Raise if the staged keys would collide with each other or with documents not staged."""
        claimed: dict[tuple[Any, ...], int] = {}
        full = self.maps[-1]
        for doc_id, keys in staged.items():
            for key in keys:
                if claimed.setdefault(key, doc_id) != doc_id or any(
                    other not in staged for other in full.get(key, ())
                ):
                    shown = dict(zip(self.fields, key))
                    raise DuplicateKeyError(
                        f"duplicate key for unique index {self.fields}: {shown}"
                    )

    def lookup(self, probes: dict[str, frozenset[Any]]) -> tuple[list[int], int] | None:
        """Candidate ids (unsorted) and how many leading fields were used; None if unusable."""
        used = 0
        for field in self.fields:
            if field not in probes:
                break
            used += 1
        if not used:
            return None
        key_sets = [probes[f] for f in self.fields[:used]]
        if math.prod(map(len, key_sets)) > _MAX_PROBES:
            return None
        mapping = self.maps[used - 1]
        if used == 1 and len(key_sets[0]) == 1:  # the common case: one key, no union needed
            return list(mapping.get((next(iter(key_sets[0])),), ())), used
        found: set[int] = set()
        for combo in itertools.product(*key_sets):
            found.update(mapping.get(combo, ()))
        return list(found), used


# --- updates ----------------------------------------------------------------------------------

_ABSENT = object()


def _split(path: Any) -> tuple[str, ...]:
    parts = tuple(path.split(".")) if isinstance(path, str) else ()
    if not parts or any(not p or p.startswith("$") for p in parts) or parts[0] == "_id":
        raise ValueError(f"invalid field path {path!r}")
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _copy_in(value: Any) -> tuple[Any, bytes | None]:
    """A private copy of `value`, and its orjson bytes if it survives a JSON round trip intact."""
    try:
        blob = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError included
        return copy.deepcopy(value), None
    clone = orjson.loads(blob)
    if clone == value:
        return clone, blob
    return copy.deepcopy(value), None


def _blob(doc: Doc) -> bytes | None:
    try:
        return orjson.dumps(doc)
    except TypeError:  # e.g. an $inc past 64 bits
        return None


class _Update:
    """A validated update: (operator, path parts, operand) steps, operands privately copied."""

    __slots__ = ("steps", "json_safe", "paths")

    def __init__(self, update: Update) -> None:
        if not isinstance(update, dict) or not update:
            raise ValueError("an update must be a non-empty dict of update operators")
        update, blob = _copy_in(update)
        self.json_safe = blob is not None
        self.steps: list[tuple[str, tuple[str, ...], Any]] = []
        for op, fields in update.items():
            if op not in _UPDATE_OPS:
                raise ValueError(f"unsupported update operator {op!r} (only {_UPDATE_OPS})")
            if not isinstance(fields, dict):
                raise ValueError(f"the operand of {op} must be a dict")
            for path, operand in fields.items():
                self.steps.append((op, _split(path), self._operand(op, path, operand)))
        ordered = sorted(parts for _, parts, _ in self.steps)
        for a, b in zip(ordered, ordered[1:]):
            if b[: len(a)] == a:
                raise ValueError(f"update paths {'.'.join(a)!r} and {'.'.join(b)!r} conflict")
        self.paths = [".".join(parts) for _, parts, _ in self.steps]

    @staticmethod
    def _operand(op: str, path: str, operand: Any) -> Any:
        if op == "$inc" and not _is_number(operand):
            raise ValueError(f"$inc of {path!r} needs a number, got {operand!r}")
        if op != "$push":
            return operand
        if isinstance(operand, dict) and any(str(k).startswith("$") for k in operand):
            if set(operand) != {"$each"} or not isinstance(operand["$each"], list):
                raise ValueError(f"$push of {path!r}: only a list under $each is supported")
            return operand["$each"]
        return [operand]

    def touches(self, fields: Iterable[str]) -> bool:
        """Whether any updated path is, contains or lies inside one of `fields`."""
        return any(
            p == f or f.startswith(p + ".") or p.startswith(f + ".")
            for p in self.paths
            for f in fields
        )

    def apply(self, doc: Doc) -> Doc:
        """The updated document; `doc` is never modified (only the containers on changed paths are
        copied, the rest is shared: stored documents are immutable)."""
        new = dict(doc)
        fresh = {id(new)}
        for op, parts, operand in self.steps:
            _apply_step(new, parts, op, operand, fresh)
        return new


def _get(node: Any, part: str, op: str) -> Any:
    """The child `part` of a document or array, _ABSENT if missing; raise where MongoDB would."""
    if isinstance(node, dict):
        return node.get(part, _ABSENT)
    if part.isascii() and part.isdigit():
        index = int(part)
        return node[index] if index < len(node) else _ABSENT
    if op == "$unset":
        return _ABSENT
    raise ValueError(f"cannot use the non-numeric part {part!r} to address an array element")


def _put(node: Any, part: str, value: Any) -> None:
    if isinstance(node, dict):
        node[part] = value
        return
    index = int(part)
    if index >= len(node):
        node.extend([None] * (index + 1 - len(node)))  # MongoDB pads arrays with nulls
    node[index] = value


def _apply_step(root: Doc, parts: tuple[str, ...], op: str, operand: Any, fresh: set[int]) -> None:
    node: Any = root
    for depth, part in enumerate(parts[:-1]):
        child = _get(node, part, op)
        if child is _ABSENT:
            if op == "$unset":
                return
            child = {}
        elif isinstance(child, (dict, list)):
            if id(child) in fresh:
                node = child
                continue
            child = dict(child) if isinstance(child, dict) else list(child)
        elif op == "$unset":
            return
        else:
            where = ".".join(parts[: depth + 1])
            raise ValueError(f"cannot create field {parts[depth + 1]!r} in {where!r}: {child!r}")
        _put(node, part, child)
        fresh.add(id(child))
        node = child
    last = parts[-1]
    current = _get(node, last, op)
    if op == "$set":
        _put(node, last, operand)
    elif op == "$unset":
        if current is not _ABSENT:
            if isinstance(node, dict):
                del node[last]
            else:
                node[int(last)] = None  # MongoDB nulls array elements instead of removing them
    elif op == "$inc":
        if current is _ABSENT:
            _put(node, last, operand)
        elif _is_number(current):
            _put(node, last, current + operand)
        else:
            raise ValueError(f"cannot $inc the non-numeric field {'.'.join(parts)!r}")
    elif current is _ABSENT:  # $push
        _put(node, last, list(operand))
    elif isinstance(current, list):
        _put(node, last, current + operand)
    else:
        raise ValueError(f"cannot $push to the non-array field {'.'.join(parts)!r}")


# --- sort and projection ----------------------------------------------------------------------


def _rank(value: Any) -> tuple[int, Any]:
    """A sort key ordering values across types as MongoDB does (null < numbers < strings < ...)."""
    if value is None or value is NOTHING:
        return (5, 0)
    if isinstance(value, bool):
        return (40, value)
    if isinstance(value, (int, float)):
        return (10, value) if value == value else (10, -math.inf)  # NaN sorts below numbers
    if isinstance(value, str):
        return (15, value)
    if isinstance(value, datetime):
        return (45, value)
    rank = 20 if isinstance(value, dict) else 25 if isinstance(value, (list, tuple)) else 30
    return (rank, BsonComparable(value))


def _field_rank(doc: Doc, path: str, descending: bool) -> tuple[int, Any]:
    values: list[Any] = []
    saw_array = False
    for value in _values(doc, path) or [None]:
        if isinstance(value, (list, tuple)):
            saw_array = True
            values.extend(value)
        else:
            values.append(value)
    if not values:
        return (0, 0) if saw_array else _rank(None)  # an empty array sorts before null
    if len(values) == 1:
        return _rank(values[0])
    ranks = list(map(_rank, values))
    return max(ranks) if descending else min(ranks)


class _Reversed:
    """Inverts the order of a value that cannot simply be negated."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    __hash__ = None  # type: ignore[assignment]


def _sort_key(spec: list[tuple[str, int]]) -> Callable[[Doc], tuple[Any, ...]]:
    """One key for the whole sort, so a single (C-speed) sort or `min` does the job."""
    fields = [(path, direction == -1, "." not in path) for path, direction in spec]

    def key(doc: Doc) -> tuple[Any, ...]:
        out = []
        for path, desc, top_level in fields:
            value = doc.get(path, NOTHING) if top_level else NOTHING
            kind = type(value)
            if kind is str:  # fast paths for top-level strings and numbers
                rank = 15
            elif (kind is int or kind is float) and value == value:
                rank = 10
            else:
                rank, value = _field_rank(doc, path, desc)
            if not desc:
                out.append((rank, value))
            elif rank in (0, 5, 10, 40):  # numbers, bools, null: negate
                out.append((-rank, -value))
            else:
                out.append((-rank, _Reversed(value)))
        return tuple(out)

    return key


def _check_sort(sort: Sort | None) -> list[tuple[str, int]]:
    spec = list(sort or ())
    for item in spec:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and item[1] in (1, -1)):
            raise ValueError(f"a sort is a list of (path, 1 | -1), got {item!r}")
    return spec


def _projection_tree(projection: Projection) -> dict[str, Any] | None:
    """{"a": True, "b": {"c": True}} for ["a", "b.c"]; None for the whole document."""
    if not projection:
        return None
    if isinstance(projection, str):
        raise TypeError("a projection is a list of field paths, not a string")
    tree: dict[str, Any] = {}
    for path in projection:
        parts = _split(path) if path != "_id" else ("_id",)
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
        self._docs: dict[int, Doc] = {}  # insertion order is the natural order
        self._blobs: dict[int, bytes | None] = {}  # orjson bytes, None if not JSON-safe
        self._indexes: dict[tuple[str, ...], _Index] = {}
        # sort -> doc id -> sort key; a document's entry is dropped whenever it changes
        self._sort_keys: dict[tuple[tuple[str, int], ...], dict[int, tuple[Any, ...]]] = {}
        self._next_id = 0

    # -- internals (all synchronous: nothing can interleave with a read-modify-write) --

    def _export(self, doc_id: int, tree: dict[str, Any] | None) -> Doc:
        blob = self._blobs[doc_id]
        if tree is None:
            return orjson.loads(blob) if blob is not None else copy.deepcopy(self._docs[doc_id])
        projected = _project(self._docs[doc_id], tree)
        return (
            orjson.loads(orjson.dumps(projected)) if blob is not None else copy.deepcopy(projected)
        )

    def _candidates(self, plan: _Plan) -> tuple[Iterable[int], set[str]]:
        """Ids to examine, in natural order, and the exact conditions the index already proved."""
        best: tuple[list[int], int, _Index] | None = None
        for index in self._indexes.values():
            found = index.lookup(plan.probes)
            if found is not None and (best is None or len(found[0]) < len(best[0])):
                best = (found[0], found[1], index)
        if best is None:
            return self._docs.keys(), set()
        ids, used, index = best
        ids.sort()
        proved = {f for f in index.fields[:used] if f in plan.exact}  # probed with exact keys
        return ids, proved

    def _matching(self, filter: Filter) -> Iterator[int]:
        plan = _Plan(filter)
        ids, proved = self._candidates(plan)
        checks = [(p, keys) for p, keys in plan.exact.items() if p not in proved]
        if not checks and not plan.residual:
            return iter(ids)  # the index answered the whole filter
        return self._filtered(ids, checks, plan.residual)

    def _filtered(
        self, ids: Iterable[int], checks: list[tuple[str, frozenset[Any]]], residual: Filter
    ) -> Iterator[int]:
        docs = self._docs
        for doc_id in ids:
            doc = docs[doc_id]
            if all(_matches_exact(doc, p, keys) for p, keys in checks) and (
                not residual or filter_applies(residual, doc)
            ):
                yield doc_id

    def _select(self, filter: Filter, sort: Sort | None, limit: int) -> list[int]:
        spec = _check_sort(sort)
        if not spec:
            return list(itertools.islice(self._matching(filter), limit or None))
        key = self._cached_sort_key(spec)
        if limit == 1:  # `min` keeps the first of equals, like a stable sort
            best = min(self._matching(filter), key=key, default=None)
            return [] if best is None else [best]
        ids = sorted(self._matching(filter), key=key)
        return ids[:limit] if limit else ids

    def _cached_sort_key(self, spec: list[tuple[str, int]]) -> Callable[[int], tuple[Any, ...]]:
        """The sort key of a document id; remembered, since sorts repeat and keys cost ~1 µs."""
        name = tuple((path, direction) for path, direction in spec)
        cache = self._sort_keys.get(name)
        if cache is None:
            if len(self._sort_keys) >= _SORT_CACHES:
                del self._sort_keys[next(iter(self._sort_keys))]  # the oldest
            cache = self._sort_keys[name] = {}
        compute, docs = _sort_key(spec), self._docs

        def key(doc_id: int) -> tuple[Any, ...]:
            found = cache.get(doc_id)
            if found is None:
                found = cache[doc_id] = compute(docs[doc_id])
            return found

        return key

    def _forget_sort_keys(self, ids: Iterable[int]) -> None:
        for cache in self._sort_keys.values():
            for doc_id in ids:
                cache.pop(doc_id, None)

    def _write(
        self, changes: dict[int, tuple[Doc, bytes | None]], indexes: Iterable[_Index]
    ) -> None:
        """Store new versions of documents (new or updated) after checking unique indexes."""
        staged = [
            (index, {i: index.keys_of(doc) for i, (doc, _) in changes.items()}) for index in indexes
        ]
        for index, keys in staged:
            if index.unique:
                index.check(keys)
        for index, keys in staged:
            for doc_id, doc_keys in keys.items():
                if index.entries.get(doc_id) != doc_keys:
                    if doc_id in index.entries:
                        index.remove(doc_id)
                    index.add(doc_id, doc_keys)
        for doc_id, (doc, blob) in changes.items():
            self._docs[doc_id] = doc
            self._blobs[doc_id] = blob
        self._forget_sort_keys(changes)

    def _insert(self, doc: Doc) -> None:
        if not isinstance(doc, dict):
            raise TypeError(f"a document must be a dict, not {type(doc).__name__}")
        if "_id" in doc:
            raise ValueError("documents must not carry `_id`")
        self._write({self._next_id: _copy_in(doc)}, self._indexes.values())
        self._next_id += 1

    def _update(self, ids: list[int], update: _Update) -> None:
        changes = {}
        for doc_id in ids:
            new = update.apply(self._docs[doc_id])
            # stays JSON-safe only if it was and the operands are (else: deepcopy from now on)
            safe = update.json_safe and self._blobs[doc_id] is not None
            changes[doc_id] = (new, _blob(new) if safe else None)
        self._write(changes, [ix for ix in self._indexes.values() if update.touches(ix.fields)])

    # -- the protocol --

    async def create_index(self, keys: Sort, *, unique: bool = False) -> None:
        spec = _check_sort(keys)
        fields = tuple(".".join(_split(path)) for path, _ in spec)
        if not fields or len(set(fields)) != len(fields):
            raise ValueError(f"invalid index keys {keys!r}")
        if fields in self._indexes:
            if self._indexes[fields].unique != unique:
                raise ValueError(f"an index on {fields} already exists with other options")
            return
        index = _Index(fields, unique)
        staged = {doc_id: index.keys_of(doc) for doc_id, doc in self._docs.items()}
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
        compiled, tree = _Update(update), _projection_tree(projection)
        ids = self._select(filter, sort, 1)
        if not ids:
            return None
        self._update(ids, compiled)
        return self._export(ids[0], tree)

    async def update_one(self, filter: Filter, update: Update) -> int:
        compiled = _Update(update)
        ids = self._select(filter, None, 1)
        self._update(ids, compiled)
        return len(ids)

    async def update_many(self, filter: Filter, update: Update) -> int:
        compiled = _Update(update)
        ids = self._select(filter, None, 0)
        self._update(ids, compiled)
        return len(ids)

    async def count_documents(self, filter: Filter) -> int:
        if filter == {}:
            return len(self._docs)
        return sum(1 for _ in self._matching(filter))

    async def delete_many(self, filter: Filter) -> int:
        ids = list(self._matching(filter))
        for doc_id in ids:
            for index in self._indexes.values():
                index.remove(doc_id)
            del self._docs[doc_id], self._blobs[doc_id]
        self._forget_sort_keys(ids)
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
