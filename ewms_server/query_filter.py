"""The safe subset of MongoDB's filter language accepted by /v1/query/* (pure functions).

Only comparison, set and logical operators are allowed: nothing that runs code ($where,
$function, $accumulator, $expr), nothing that reaches other collections, no $regex (a
catastrophic pattern would stall the server). Field paths must start at a field the
collection's schema knows. Anything else is Invalid (400) before it reaches the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import Invalid

LOGICAL = frozenset({"$and", "$or", "$nor"})
FIELD_OPERATORS = frozenset(
    {
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$exists",
        "$size",
        "$all",
        "$elemMatch",
        "$not",
        "$type",
    }
)
_SEGMENT = re.compile(r"^[A-Za-z0-9_][^.$\x00]{0,255}$")
MAX_LIST = 1000
TYPE_NAMES = frozenset({"double", "string", "object", "array", "bool", "int", "long", "number"})
"""$type aliases of JSON values that every backend implements (others are a database error)."""
INT64 = (-(2**63), 2**63 - 1)
"""Integers a MongoDB filter can hold (BSON has no larger ones)."""


def check_filter(query: Any, fields: Iterable[str], max_depth: int) -> None:
    if not isinstance(query, dict):
        raise Invalid("body.query: must be an object")
    _check_doc(query, frozenset(fields), max_depth, 1, "body.query")


def check_projection(projection: Iterable[str], id_field: str, schema: dict[str, Any]) -> None:
    """Each path leads through fields the collection's `schema` says are objects (or arrays
    of them); a path and a path inside it (`a` and `a.b`) are not both given (the database
    refuses the collision), nor a path inside the id, which paging always reads. The
    request schema has already checked each path's form."""
    paths = set(projection)
    for path in sorted(paths):
        parts = path.split(".")
        if parts[0] == id_field and len(parts) > 1:
            raise Invalid(f"body.projection: {path!r} is inside the id {id_field!r}, a string")
        node: dict[str, Any] | None = schema
        for n, part in enumerate(parts):
            node = _field_schema(node, part)
            if node is None and n == 0:
                raise Invalid(f"body.projection: unknown field {part!r}")
            if node is None:
                raise Invalid(f"body.projection: {path!r}: {'.'.join(parts[:n])} has no field {part!r}")
        for n in range(1, len(parts)):
            if (outer := ".".join(parts[:n])) in paths:
                raise Invalid(f"body.projection: {path!r} is inside {outer!r}; give one of them")


def _field_schema(node: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The schema of field `name` of a value described by `node` (through arrays, as the
    database reads paths); None when no such value can have that field."""
    if node is None:
        return None
    for branch in node.get("anyOf", node.get("oneOf", [])):
        if (found := _field_schema(branch, name)) is not None:
            return found
    if isinstance(node.get("items"), dict):
        return _field_schema(node["items"], name)
    props = node.get("properties", {})
    if name in props:
        return dict(props[name])
    extra = node.get("additionalProperties")
    return dict(extra) if isinstance(extra, dict) else None


def _check_doc(query: dict[str, Any], fields: frozenset[str], max_depth: int, depth: int, where: str) -> None:
    if depth > max_depth:
        raise Invalid(f"{where}: filter nested deeper than {max_depth} levels")
    for key, value in query.items():
        if not isinstance(key, str):
            raise Invalid(f"{where}: keys must be strings")
        if key.startswith("$"):
            if key not in LOGICAL:
                raise Invalid(f"{where}: operator {key} is not allowed here")
            if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                raise Invalid(f"{where}.{key}: must be a non-empty list of filters")
            for i, sub in enumerate(value):
                if not isinstance(sub, dict):
                    raise Invalid(f"{where}.{key}[{i}]: must be an object")
                _check_doc(sub, fields, max_depth, depth + 1, f"{where}.{key}[{i}]")
        else:
            _check_path(key, fields, where)
            _check_condition(value, fields, max_depth, depth + 1, f"{where}.{key}")


def _check_path(path: str, fields: frozenset[str], where: str) -> None:
    parts = path.split(".")
    if parts[0] not in fields:
        raise Invalid(f"{where}: unknown field {parts[0]!r}")
    for part in parts[1:]:
        if not _SEGMENT.match(part):
            raise Invalid(f"{where}: bad field path {path!r}")


def _check_condition(value: Any, fields: frozenset[str], max_depth: int, depth: int, where: str) -> None:
    if depth > max_depth:
        raise Invalid(f"{where}: filter nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in value):
            for op, arg in value.items():
                if op not in FIELD_OPERATORS:
                    raise Invalid(f"{where}: operator {op} is not allowed")
                if op in ("$in", "$nin", "$all"):
                    if not isinstance(arg, list) or len(arg) > MAX_LIST:
                        raise Invalid(f"{where}.{op}: must be a list of at most {MAX_LIST} values")
                    for i, item in enumerate(arg):
                        _check_literal(item, max_depth, depth + 1, f"{where}.{op}[{i}]")
                elif op == "$elemMatch":
                    if not isinstance(arg, dict):
                        raise Invalid(f"{where}.$elemMatch: must be an object")
                    _check_elem_match(arg, fields, max_depth, depth + 1, f"{where}.$elemMatch")
                elif op == "$not":
                    if not isinstance(arg, dict) or not arg or not all(str(k).startswith("$") for k in arg):
                        raise Invalid(f'{where}.$not: must be an operator object, e.g. {{"$eq": 1}}')
                    _check_condition(arg, fields, max_depth, depth + 1, f"{where}.$not")
                elif op == "$exists":
                    if not isinstance(arg, bool):
                        raise Invalid(f"{where}.$exists: must be true or false")
                elif op == "$size":
                    if not isinstance(arg, int) or isinstance(arg, bool) or not 0 <= arg <= INT64[1]:
                        raise Invalid(f"{where}.$size: must be a non-negative integer")
                elif op == "$type":
                    if not isinstance(arg, str) or arg not in TYPE_NAMES:
                        raise Invalid(f"{where}.$type: must be one of {', '.join(sorted(TYPE_NAMES))}")
                else:
                    _check_literal(arg, max_depth, depth + 1, f"{where}.{op}")
            return
    _check_literal(value, max_depth, depth, where)


def _check_elem_match(
    arg: dict[str, Any], fields: frozenset[str], max_depth: int, depth: int, where: str
) -> None:
    if any(isinstance(k, str) and k.startswith("$") for k in arg):
        _check_condition(arg, fields, max_depth, depth, where)
        return
    for key, value in arg.items():  # sub-document fields: any plain name
        if not isinstance(key, str) or not _SEGMENT.match(key):
            raise Invalid(f"{where}: bad field name {key!r}")
        _check_condition(value, fields, max_depth, depth + 1, f"{where}.{key}")


def _check_literal(value: Any, max_depth: int, depth: int, where: str) -> None:
    """A plain value: no operator may hide inside it."""
    if depth > max_depth:
        raise Invalid(f"{where}: value nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise Invalid(f"{where}: operator {k} is not allowed inside a value")
            if "\x00" in k:
                raise Invalid(f"{where}: a key may not contain NUL")
            _check_literal(v, max_depth, depth + 1, f"{where}.{k}")
    elif isinstance(value, list):
        if len(value) > MAX_LIST:
            raise Invalid(f"{where}: list longer than {MAX_LIST}")
        for i, v in enumerate(value):
            _check_literal(v, max_depth, depth + 1, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
        raise Invalid(f"{where}: integer out of the 64-bit range")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise Invalid(f"{where}: unsupported value")
