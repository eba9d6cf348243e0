"""What /v1/query/* refuses beyond the allow-list of `query_filter` (pure functions): filters
too costly to run, and constructs whose answer could differ between the stores.

Cost: at most EWMS_QUERY_MAX_CLAUSES field conditions and EWMS_QUERY_MAX_IN_ITEMS values in
all $in/$nin/$all lists together, and at most MAX_NESTING levels looked into along one path
(each path part after the first, and each $elemMatch, is one: each is a loop over a
sub-document or array); logical depth is checked by `query_filter`. The store then stops any
page that works longer than EWMS_QUERY_TIME_BUDGET_S. Parity: no $gt/$gte/$lt/$lte against null, a document or an array
(MongoDB's ordering of those is not reproduced by SQLite), no array positions in paths
(`a.0`), and no `"`, `\\` or control characters in field names (SQLite's JSON paths cannot
name them). Each refusal is a 400 that names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import Invalid

MAX_NESTING = 4
"""Levels looked into along one path; SQLite parses about twice as many nested loops."""
COMPARISONS = frozenset({"$gt", "$gte", "$lt", "$lte"})


@dataclass(frozen=True)
class QueryLimits:
    max_depth: int
    max_clauses: int
    max_in_items: int
    time_budget_s: float


@dataclass
class _Count:
    clauses: int = 0
    in_items: int = 0


def check_limits(query: dict[str, Any], limits: QueryLimits) -> None:
    """Call after `query_filter.check_filter` accepted the filter."""
    n = _Count()
    _document(query, n, "body.query")
    if n.clauses > limits.max_clauses:
        raise Invalid(
            f"body.query: {n.clauses} field conditions, more than EWMS_QUERY_MAX_CLAUSES "
            f"({limits.max_clauses}) allows"
        )
    if n.in_items > limits.max_in_items:
        raise Invalid(
            f"body.query: {n.in_items} values in $in/$nin/$all lists, more than "
            f"EWMS_QUERY_MAX_IN_ITEMS ({limits.max_in_items}) allows"
        )


def _document(query: dict[str, Any], n: _Count, where: str, nesting: int = 0) -> None:
    for key, value in query.items():
        if key in ("$and", "$or", "$nor"):
            for i, sub in enumerate(value):
                _document(sub, n, f"{where}.{key}[{i}]", nesting)
        else:
            _path(key, where)
            _condition(value, n, f"{where}.{key}", _deeper(nesting, key.count("."), where))


def _deeper(nesting: int, by: int, where: str) -> int:
    if nesting + by > MAX_NESTING:
        raise Invalid(
            f"{where}: looks more than {MAX_NESTING} levels into sub-documents and arrays "
            "(path parts after the first, and $elemMatch, count one each)"
        )
    return nesting + by


def _path(path: str, where: str) -> None:
    for part in path.split("."):
        if part.isascii() and part.isdigit():
            raise Invalid(f"{where}: field path {path!r}: array positions are not supported")
        if '"' in part or "\\" in part or any(ord(c) < 32 for c in part):
            raise Invalid(
                f"{where}: field path {path!r}: a double quote, a backslash or a control "
                "character in a field name is not supported"
            )


def _condition(value: Any, n: _Count, where: str, nesting: int) -> None:
    if not (isinstance(value, dict) and any(k.startswith("$") for k in value)):
        n.clauses += 1  # {field: value}
        return
    for op, arg in value.items():
        n.clauses += 1
        if op in ("$in", "$nin", "$all"):
            n.in_items += len(arg)
        elif op in COMPARISONS and (arg is None or isinstance(arg, (dict, list))):
            raise Invalid(
                f"{where}.{op}: comparing with null, a document or an array is not supported "
                "(for null use {field: null} or $exists)"
            )
        elif op == "$not":
            _condition(arg, n, f"{where}.$not", nesting)
        elif op == "$elemMatch":
            inner = _deeper(nesting, 1, f"{where}.$elemMatch")
            if any(k.startswith("$") for k in arg):
                _condition(arg, n, f"{where}.$elemMatch", inner)
            else:
                _document(arg, n, f"{where}.$elemMatch", inner)
