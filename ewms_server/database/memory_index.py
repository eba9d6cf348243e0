"""Hash indexes of the in-memory database, and the index keys of values and conditions.

An index key is a hashable stand-in for a value, equal for values that Python (so mongomock)
finds equal. Indexes, single or compound, are multikey (an array is indexed as a whole and by each
element) and treat a missing field as null, like MongoDB. A compound index also answers equality
on any prefix of its fields.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from mongomock.filtering import NOTHING, iter_key_candidates

from .base import DuplicateKeyError

Doc = dict[str, Any]
SCALARS = (str, int, float)  # bool is an int
_SEQ, _MAP = object(), object()  # tags that keep array/document index keys apart from scalars
_MAX_PROBES = 1024  # beyond this many key combinations an index lookup is not worth it


def index_key(value: Any) -> Any:
    """A hashable stand-in for `value`, equal for values that Python (so mongomock) finds equal."""
    if value is None or value is NOTHING:
        return None
    if isinstance(value, (list, tuple)):
        return (_SEQ, tuple(map(index_key, value)))
    if isinstance(value, dict):
        return (_MAP, frozenset((k, index_key(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return object()  # equal to nothing: such a value is never found through an index
    return value


def field_values(doc: Doc, path: str) -> list[Any]:
    """The values `path` reaches, as the matcher sees them (arrays of documents fan out)."""
    if "." not in path:
        return [doc.get(path, NOTHING)]
    return list(iter_key_candidates(path, doc))


def field_keys(doc: Doc, path: str) -> set[Any]:
    """Index keys of one field: its value, and each element when it is an array."""
    keys: set[Any] = set()
    for value in field_values(doc, path) or [NOTHING]:
        keys.add(index_key(value))
        if isinstance(value, (list, tuple)):
            keys.update(map(index_key, value))
    return keys


def exact_keys(cond: Any) -> frozenset[Any] | None:
    """Keys of a condition decided exactly like the matcher would: scalar `==`, `$eq` or `$in`."""
    if isinstance(cond, SCALARS):
        return frozenset((cond,)) if cond == cond else None  # NaN equals nothing
    if isinstance(cond, dict) and len(cond) == 1:
        if "$eq" in cond:
            return exact_keys(cond["$eq"])
        values = cond.get("$in")
        if isinstance(values, (list, tuple)) and all(isinstance(v, SCALARS) and v == v for v in values):
            return frozenset(values)
    return None


def _literal_probe(value: Any) -> frozenset[Any] | None:
    if isinstance(value, dict) and any(str(k).startswith("$") for k in value):
        return None
    if isinstance(value, re.Pattern) or type(value).__name__ == "Regex":
        return None  # a regex matches, it does not equal: let the matcher scan
    return frozenset((index_key(value),))


def probe_keys(cond: Any) -> frozenset[Any] | None:
    """Index keys covering every document `cond` can match (a superset), or None if unknown."""
    exact = exact_keys(cond)
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


def matches_exact(doc: Doc, path: str, keys: frozenset[Any]) -> bool:
    if "." not in path:
        value = doc.get(path, NOTHING)
        if isinstance(value, SCALARS):
            return value in keys
    return not keys.isdisjoint(field_keys(doc, path))


Held = int | tuple[int, ...] | set[int]  # the ids of the documents having an index key
_SMALL = 8  # up to this many ids sharing a key are held in a tuple, beyond in a set


def _with(held: Held | None, doc_id: int) -> Held:
    """`held` with `doc_id` added (a new tuple or int, or the same set)."""
    if held is None:
        return doc_id
    if type(held) is int:
        return held if held == doc_id else (held, doc_id)
    if type(held) is tuple:
        if doc_id in held:  # (a multikey document may reach a key twice)
            return held
        return (*held, doc_id) if len(held) < _SMALL else {*held, doc_id}
    held.add(doc_id)  # type: ignore[union-attr]
    return held


def _without(held: Held, doc_id: int) -> Held | None:
    """`held` with `doc_id` removed; None if no id is left."""
    if type(held) is int:
        return None if held == doc_id else held
    if type(held) is set:
        held.discard(doc_id)
        if len(held) > _SMALL // 2:  # (hysteresis: no back and forth at the boundary)
            return held
    rest = tuple(i for i in held if i != doc_id)  # type: ignore[union-attr]
    return rest if len(rest) > 1 else rest[0] if rest else None


def _ids(held: Held | None) -> list[int]:
    return [] if held is None else [held] if type(held) is int else list(held)  # type: ignore


class Index:
    """A hash index: for each prefix of its fields, key tuple -> the documents having it.

    A key held by one document maps to its id itself, one held by a few to a tuple of ids, and
    only one held by many to a set: a unique index (and any mostly-distinct one) costs no
    container per document, so the garbage collector has nothing per document to traverse (it
    does not track ints, and stops tracking tuples of them). For the same reason the keys of
    each document are remembered as a tuple, not a frozenset.
    """

    __slots__ = ("entries", "fields", "maps", "unique")

    def __init__(self, fields: tuple[str, ...], unique: bool) -> None:
        self.fields = fields
        self.unique = unique
        self.maps: list[dict[tuple[Any, ...], Held]] = [{} for _ in fields]
        self.entries: dict[int, tuple[tuple[Any, ...], ...]] = {}

    def keys_of(self, doc: Doc) -> frozenset[tuple[Any, ...]]:
        return frozenset(itertools.product(*(field_keys(doc, f) for f in self.fields)))

    def has(self, doc_id: int, keys: frozenset[tuple[Any, ...]]) -> bool:
        """Whether the document is indexed with exactly these keys."""
        old = self.entries.get(doc_id)
        if old is None or len(old) != len(keys):
            return False
        return old[0] in keys if len(old) == 1 else keys.issuperset(old)

    def add(self, doc_id: int, keys: frozenset[tuple[Any, ...]]) -> None:
        self.entries[doc_id] = tuple(keys)
        for n, mapping in enumerate(self.maps, 1):
            for key in keys:
                prefix = key[:n]
                mapping[prefix] = _with(mapping.get(prefix), doc_id)

    def remove(self, doc_id: int) -> None:
        keys = self.entries.pop(doc_id)
        for n, mapping in enumerate(self.maps, 1):
            for key in keys:
                prefix = key[:n]
                held = mapping.get(prefix)
                if held is not None:
                    rest = _without(held, doc_id)
                    if rest is None:
                        del mapping[prefix]
                    elif rest is not held:
                        mapping[prefix] = rest

    def check(self, staged: dict[int, frozenset[tuple[Any, ...]]]) -> None:
        """Raise if the staged keys would collide with each other or with documents not staged."""
        claimed: dict[tuple[Any, ...], int] = {}
        full = self.maps[-1]
        for doc_id, keys in staged.items():
            for key in keys:
                if claimed.setdefault(key, doc_id) != doc_id or any(
                    other not in staged for other in _ids(full.get(key))
                ):
                    shown = dict(zip(self.fields, key))
                    raise DuplicateKeyError(f"duplicate key for unique index {self.fields}: {shown}")

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
        n_keys = math.prod(map(len, key_sets))
        if n_keys > _MAX_PROBES:
            return None
        mapping = self.maps[used - 1]
        if n_keys == 1:  # the common case: one key, no union needed
            return _ids(mapping.get(tuple(map(next, map(iter, key_sets))))), used
        found: set[int] = set()
        for combo in itertools.product(*key_sets):
            found.update(_ids(mapping.get(combo)))
        return list(found), used
