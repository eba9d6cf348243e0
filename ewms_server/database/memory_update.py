"""Updates for the in-memory database: `$set`, `$unset`, `$inc` and `$push` (with `$each`).

An update is validated once (`ParsedUpdate`), then applied copy-on-write to a document (decoded
from its bytes, or a stored immutable one): only the containers on the changed paths are copied
and the rest is shared.
Also the copying of values into the store (`copy_in`, `to_blob`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import orjson

from .base import Update

Doc = dict[str, Any]
UPDATE_OPS = ("$set", "$unset", "$inc", "$push")
_ABSENT = object()


def split_path(path: Any) -> tuple[str, ...]:
    parts = tuple(path.split(".")) if isinstance(path, str) else ()
    if not parts or any(not p or p.startswith("$") for p in parts) or parts[0] == "_id":
        raise ValueError(f"invalid field path {path!r}")
    return parts


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def copy_in(value: Any) -> tuple[Any, bytes | None]:
    """A private copy of `value`, and its orjson bytes if it survives a JSON round trip intact."""
    try:
        blob = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError included
        return copy.deepcopy(value), None
    clone = orjson.loads(blob)
    if clone == value:
        return clone, blob
    return copy.deepcopy(value), None


def to_blob(doc: Doc) -> bytes | None:
    try:
        return orjson.dumps(doc)
    except TypeError:  # e.g. an $inc past 64 bits
        return None


class ParsedUpdate:
    """A validated update: (operator, path parts, operand) steps, operands privately copied."""

    __slots__ = ("_within", "json_safe", "paths", "steps")

    def __init__(self, update: Update) -> None:
        if not isinstance(update, dict) or not update:
            raise ValueError("an update must be a non-empty dict of update operators")
        update, blob = copy_in(update)
        self.json_safe = blob is not None
        self.steps: list[tuple[str, tuple[str, ...], Any]] = []
        for op, fields in update.items():
            if op not in UPDATE_OPS:
                raise ValueError(f"unsupported update operator {op!r} (only {UPDATE_OPS})")
            if not isinstance(fields, dict):
                raise ValueError(f"the operand of {op} must be a dict")
            for path, operand in fields.items():
                self.steps.append((op, split_path(path), self._operand(op, path, operand)))
        ordered = sorted(parts for _, parts, _ in self.steps)
        for a, b in zip(ordered, ordered[1:]):
            if b[: len(a)] == a:
                raise ValueError(f"update paths {'.'.join(a)!r} and {'.'.join(b)!r} conflict")
        self.paths = {".".join(parts) for _, parts, _ in self.steps}
        # the updated paths and every path containing one ("a.b.c": "a", "a.b", "a.b.c")
        self._within = {".".join(parts[:n]) for _, parts, _ in self.steps for n in range(1, len(parts) + 1)}

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
        for field in fields:
            if field in self._within:  # an updated path is `field` or lies inside it
                return True
            if "." in field:  # `field` lies inside an updated path
                parts = field.split(".")
                if any(".".join(parts[:n]) in self.paths for n in range(1, len(parts))):
                    return True
        return False

    def apply(self, doc: Doc) -> tuple[Doc, bool]:
        """The updated document, and whether it still survives a JSON round trip if `doc` did
        (an `$inc` may overflow a float to infinity, which JSON cannot hold). `doc` is never
        modified: only the containers on changed paths are copied, the rest is shared."""
        new = dict(doc)
        fresh = {id(new)}
        exact = True
        for op, parts, operand in self.steps:
            if _apply_step(new, parts, op, operand, fresh):
                exact = False
        return new, exact


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


def _apply_step(root: Doc, parts: tuple[str, ...], op: str, operand: Any, fresh: set[int]) -> bool:
    """Apply one step in place (on fresh containers); True if it made a non-finite float."""
    node: Any = root
    for depth, part in enumerate(parts[:-1]):
        child = _get(node, part, op)
        if child is _ABSENT:
            if op == "$unset":
                return False
            child = {}
        elif isinstance(child, (dict, list)):
            if id(child) in fresh:
                node = child
                continue
            child = dict(child) if isinstance(child, dict) else list(child)
        elif op == "$unset":
            return False
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
            total = current + operand
            _put(node, last, total)
            return isinstance(total, float) and not math.isfinite(total)
        else:
            raise ValueError(f"cannot $inc the non-numeric field {'.'.join(parts)!r}")
    elif current is _ABSENT:  # $push
        _put(node, last, list(operand))
    elif isinstance(current, list):
        _put(node, last, current + operand)
    else:
        raise ValueError(f"cannot $push to the non-array field {'.'.join(parts)!r}")
    return False
