"""Query planning and matching for the in-memory database.

A filter is split (`Plan`) into
- exact conditions: scalar equality, `$eq` and `$in`, decided through index keys, so an index can
  prove them outright;
- simple comparisons: `$lt`, `$lte`, `$gt`, `$gte`, `$eq`, `$ne` or plain equality on a top-level
  field, against a number, string, bool or None. Each is compiled into a per-type table and
  evaluated in Python, as mongomock would decide it: `$lt`... compare only within a BSON type class
  (numbers with numbers, strings with strings, null with null), so a missing field or one of
  another class never matches them; `$eq`/`$ne` use Python equality (so `1` equals `True`, as in
  mongomock), and null equals a missing field. A field holding anything else (an array, a
  document, a date...) is handed to mongomock's matcher for that condition;
- the rest, handed to mongomock's matcher (`filter_applies`).
Top-level conditions are ANDed, so deciding each part separately decides the filter.

Tests take document ids: they read the document's flat record of top-level scalars
(`record_of`), and decode the whole document (`full`) only for a dotted path, a field holding
something else, or a mongomock condition on such fields.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from functools import partial
from typing import Any

from mongomock.filtering import NOTHING, filter_applies

from .base import Filter
from .memory_index import SCALARS, exact_keys, matches_exact, probe_keys

Doc = dict[str, Any]
Records = dict[int, Doc]  # document id -> its record (see `record_of`)
Full = Callable[[int], Doc]  # document id -> the whole document (not to be modified)
Test = Callable[[int], bool]  # of a document id
Column = Callable[[str, list[int]], list[Any]]


class _Missing:
    """The type of the placeholder for a missing field: no stored value can be of this type."""


MISSING = _Missing()  # what `doc.get(path, MISSING)` gives for a missing field
# In a record, the value of a top-level field holding anything but a scalar (an array, a
# document, a date...): such a field is decided on the whole document (so even a document
# holding Ellipsis itself is decided right). The collector does not track Ellipsis.
NESTED: Any = ...
_ATOMIC = frozenset((str, int, float, bool, type(None)))
_LOGICAL = ("$and", "$or", "$nor")


def record_of(doc: Doc) -> Doc:
    """The record of a document: its top-level fields, with `NESTED` for those that are not a
    str, int, float, bool or None. As it holds no container, CPython does not track it for
    garbage collection: the fast matcher and the sort keys read it instead of the document."""
    return {k: v if type(v) in _ATOMIC else NESTED for k, v in doc.items()}


_NONE = type(None)
_CLASSES = {_NONE: 5, int: 10, float: 10, str: 15, bool: 40}  # BSON type class of a scalar
# x OP value == SWAPPED[OP](value, x): partial(SWAPPED[OP], x) tests a field value at C speed
_SWAPPED = {"$lt": operator.gt, "$lte": operator.ge, "$gt": operator.lt, "$gte": operator.le}
_EQUALITY = {"$eq": operator.eq, "$ne": operator.ne}


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _all_of(tests: list[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        return all(t(value) for t in tests)

    return test


def _value_test(ops: dict[str, Any], kind: type) -> Callable[[Any], bool]:
    """The test of a field value of type `kind`, a scalar type or `_Missing`."""
    kind_class = _CLASSES.get(kind)
    tests: list[Callable[[Any], bool]] = []
    for op, operand in ops.items():
        if op in _EQUALITY:
            if kind is _Missing:  # mongomock: a missing field equals None, and only None
                if (operand is None) != (op == "$eq"):
                    return _never
            else:
                tests.append(partial(_EQUALITY[op], operand))
        elif kind_class is None or kind_class != _CLASSES[type(operand)]:
            return _never  # type bracketing: no comparison across classes, nor with missing
        elif kind is _NONE:  # null against null compares as equal
            if not _SWAPPED[op](0, 0):
                return _never
        else:
            tests.append(partial(_SWAPPED[op], operand))
    return _always if not tests else tests[0] if len(tests) == 1 else _all_of(tests)


class _ValueTests(dict[type, Callable[[Any], bool] | None]):
    """Field value type -> its test, built on first use; None for the types left to mongomock."""

    def __init__(self, ops: dict[str, Any]) -> None:
        super().__init__()
        self.ops = ops

    def __missing__(self, kind: type) -> Callable[[Any], bool] | None:
        test = self[kind] = _value_test(self.ops, kind) if kind in _CLASSES or kind is _Missing else None
        return test


def _simple_ops(cond: Any) -> dict[str, Any] | None:
    """`cond` as {operator: operand} if it is a simple comparison, else None."""
    if type(cond) in _CLASSES:
        return {"$eq": cond}  # plain equality decides like `$eq` for a non-array value
    if not isinstance(cond, dict) or not cond:
        return None
    for op, operand in cond.items():
        if (op not in _SWAPPED and op not in _EQUALITY) or type(operand) not in _CLASSES:
            return None
    return cond


class Comparison:
    """A simple comparison on a top-level field, decided in Python for scalar field values."""

    __slots__ = ("_alone", "_table", "path", "probe")

    def __init__(self, path: str, cond: Any, ops: dict[str, Any]) -> None:
        self.path = path
        self._table = _ValueTests(ops)
        self._alone = {path: cond}  # for mongomock, when the field holds something else
        # index keys covering the matches, as for any condition (only `$eq` narrows)
        self.probe = probe_keys(cond) if "$eq" in ops else None

    def decide(self, value: Any, doc_id: int, full: Full) -> bool:
        """Whether the document matches, given its field value from its record."""
        value_test = self._table[type(value)]
        if value_test is not None:
            return value_test(value)
        return filter_applies(self._alone, full(doc_id))  # an array, a document, a date...

    def select(self, ids: list[int], values: list[Any], full: Full) -> list[int]:
        """The ids that match, given their field values (`MISSING` if absent), in C loops when
        the values are all of one scalar type (the usual case)."""
        kinds = set(map(type, values))
        if len(kinds) == 1 and (value_test := self._table[kinds.pop()]) is not None:
            return list(itertools.compress(ids, map(value_test, values)))
        decide = self.decide
        return [doc_id for doc_id, value in zip(ids, values) if decide(value, doc_id, full)]


def compile_condition(path: str, cond: Any) -> Comparison | None:
    """The fast form of a condition, None if it is not a simple comparison on a top-level field."""
    if path.startswith("$") or "." in path:
        return None
    ops = _simple_ops(cond)
    return None if ops is None else Comparison(path, cond, ops)


def _comparison_test(comparison: Comparison, records: Records, full: Full) -> Test:
    path, decide = comparison.path, comparison.decide
    return lambda doc_id: decide(records[doc_id].get(path, MISSING), doc_id, full)


def _exact_test(path: str, keys: frozenset[Any], records: Records, full: Full) -> Test:
    if "." in path:
        return lambda doc_id: matches_exact(full(doc_id), path, keys)

    def test(doc_id: int) -> bool:
        value = records[doc_id].get(path, NOTHING)
        if isinstance(value, SCALARS):
            return value in keys
        if value is NESTED:
            return matches_exact(full(doc_id), path, keys)
        return False  # null or missing: exact keys are never null

    return test


def _filter_paths(filter: Filter, out: set[str]) -> bool:
    """Collect the field paths a filter reads; False if it may read others (`$expr`...)."""
    for key, cond in filter.items():
        if key in _LOGICAL:
            if not isinstance(cond, list):
                return False
            for clause in cond:
                if not isinstance(clause, dict) or not _filter_paths(clause, out):
                    return False
        elif key == "$comment":
            continue
        elif not isinstance(key, str) or key.startswith("$"):
            return False
        else:
            out.add(key)
    return True


def _residual_test(residual: Filter, records: Records, full: Full) -> Test:
    """mongomock's matcher, on the record when it holds all the fields the filter reads."""
    paths: set[str] = set()
    if not _filter_paths(residual, paths) or any("." in p for p in paths):
        return lambda doc_id: filter_applies(residual, full(doc_id))
    fields = tuple(paths)

    def test(doc_id: int) -> bool:
        record = records[doc_id]
        for path in fields:
            if record.get(path) is NESTED:
                return filter_applies(residual, full(doc_id))
        return filter_applies(residual, record)

    return test


class Plan:
    """A filter split into exact conditions (with index probes), fast comparisons, and the rest."""

    __slots__ = ("comparisons", "exact", "probes", "residual")

    def __init__(self, filter: Filter) -> None:
        if not isinstance(filter, dict):
            raise TypeError(f"filter must be a dict, not {type(filter).__name__}")
        self.exact: dict[str, frozenset[Any]] = {}
        self.probes: dict[str, frozenset[Any]] = {}
        self.comparisons: list[Comparison] = []
        self.residual: Filter = {}
        for path, cond in filter.items():
            keys = None if path.startswith("$") else exact_keys(cond)
            if keys is not None:
                self.exact[path] = self.probes[path] = keys
            elif (comparison := compile_condition(path, cond)) is not None:
                self.comparisons.append(comparison)
                if comparison.probe is not None:
                    self.probes[path] = comparison.probe
            else:
                self.residual[path] = cond
                if path == "$and" and isinstance(cond, list):
                    self._harvest(cond)
                elif not path.startswith("$") and (probe := probe_keys(cond)) is not None:
                    self.probes[path] = probe

    def _harvest(self, clauses: list[Any]) -> None:
        """Equality conditions inside a top-level `$and` still narrow the candidates."""
        for clause in clauses:
            for path, cond in clause.items() if isinstance(clause, dict) else ():
                if path == "$and" and isinstance(cond, list):
                    self._harvest(cond)
                elif not path.startswith("$") and path not in self.probes:
                    if (probe := probe_keys(cond)) is not None:
                        self.probes[path] = probe

    def test(self, proved: set[str], records: Records, full: Full) -> Test | None:
        """The test of one candidate document (by id), given the exact conditions an index has
        proved; None if every candidate matches."""
        tests: list[Test] = [
            _exact_test(p, keys, records, full) for p, keys in self.exact.items() if p not in proved
        ]
        tests += [_comparison_test(c, records, full) for c in self.comparisons]
        if self.residual:
            tests.append(_residual_test(self.residual, records, full))  # the slowest, so the last
        if len(tests) <= 1:
            return tests[0] if tests else None

        def test(doc_id: int) -> bool:
            for t in tests:
                if not t(doc_id):
                    return False
            return True

        return test

    def select(
        self, ids: list[int], records: Records, full: Full, column: Column, proved: set[str]
    ) -> list[int]:
        """The matching ids among the candidates `ids`, the conditions checked one after the other
        over all of them (cheaper than document by document); `column(path, ids)` gives the values
        of a top-level field."""
        for path, keys in self.exact.items():
            if path not in proved:
                ids = list(filter(_exact_test(path, keys, records, full), ids))
        for comparison in self.comparisons:
            if ids:
                ids = comparison.select(ids, column(comparison.path, ids), full)
        if self.residual and ids:  # the slowest, so the last
            ids = list(filter(_residual_test(self.residual, records, full), ids))
        return ids
