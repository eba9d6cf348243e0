"""Sort keys for the in-memory database, following MongoDB's type order.

Missing = null first ascending; numbers < strings < documents < arrays < ... < bool < dates; an
array sorts by its smallest element ascending and its largest descending (an empty one before
null). The key of a document is one flat tuple (rank, value, rank, value...), so a single C-speed
`sort` or `min` does the job, and it is computed directly for top-level numbers and strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from mongomock.filtering import NOTHING, BsonComparable

from .base import Sort
from .memory_index import field_values

Doc = dict[str, Any]
SortKey = Callable[[Doc], tuple[Any, ...]]


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
    return (rank, _Bson(value))


def _field_rank(doc: Doc, path: str, descending: bool) -> tuple[int, Any]:
    values: list[Any] = []
    saw_array = False
    for value in field_values(doc, path) or [None]:
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


class _Bson(BsonComparable):
    """Compares like mongomock; equal when neither is smaller (as sort keys compare with `==`
    before `<`, and ties must reach the final document id)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Bson) and not (self < other or other < self)

    __hash__ = None  # type: ignore[assignment]


_TOP = (257,)  # ends a descending string key: above every element


def _descending(text: str) -> tuple[int, ...]:
    """A key ordering strings in reverse: 256 - code point, then `_TOP` (so that a prefix sorts
    after the longer string). Plain ints, mostly cached small ones: no object for the collector
    to track, unlike a wrapper (sort keys are remembered per document)."""
    return (*map(_FROM_256, map(ord, text)), *_TOP)


_FROM_256 = (256).__sub__


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


def sort_key(spec: list[tuple[str, int]]) -> SortKey:
    """The key of a document under `spec`: a flat tuple, compared like the (rank, value) pairs."""
    fields = [(path, direction == -1, "." not in path) for path, direction in spec]

    def key(doc: Doc) -> tuple[Any, ...]:
        out: list[Any] = []
        for path, desc, top_level in fields:
            if top_level:  # fast paths for top-level numbers and strings
                value = doc.get(path, NOTHING)
                kind = type(value)
                if (kind is int or kind is float) and value == value:
                    out += (-10, -value) if desc else (10, value)
                    continue
                if kind is str:
                    out += (-15, _descending(value)) if desc else (15, value)
                    continue
            rank, value = _field_rank(doc, path, desc)
            if not desc:
                out += (rank, value)
            elif rank in (0, 5, 10, 40):  # numbers, bools, null: negate
                out += (-rank, -value)
            elif rank == 15:
                out += (-15, _descending(value))
            else:
                out += (-rank, _Reversed(value))
        return tuple(out)

    return key


def check_sort(sort: Sort | None) -> list[tuple[str, int]]:
    spec = list(sort or ())
    for item in spec:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and item[1] in (1, -1)):
            raise ValueError(f"a sort is a list of (path, 1 | -1), got {item!r}")
    return spec
