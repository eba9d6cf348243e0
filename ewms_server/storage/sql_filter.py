"""Compile the filter language (the allow-listed MongoDB subset) to an SQLite WHERE clause.

Every value and every field path is a bound parameter; the SQL text holds only constants of
this module and column names from the collection table. Documents are JSON text in column
`doc`; a field path is read with json_type/json_extract, so a condition means what it means
in MongoDB (mongomock is the reference the tests compare with):

- a path through arrays of documents looks into every document of the array (a missing field
  in one of them counts as missing; scalars in the array are skipped);
- a condition on a field holding an array matches if the array itself or any element does;
- $ne/$nin/$not/$nor are the negation of the positive match (so they match missing fields);
- numbers compare across int/float, booleans are not numbers, strings compare by code point,
  documents and arrays compare by value (key order counts in documents);
- several operators on one field are each decided on their own (as in MongoDB).

An indexed field (a generated column, see `collections.CollectionSpec.kinds`) is compared on
its column when the value is of a type the column holds, so SQLite can use the index.
Constructs whose meaning could differ are refused before they get here (`query_limits`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

_NUM = "('integer', 'real')"
_GROUP = 32
"""Terms per flat AND/OR chain: SQLite's parser limits nesting, its planner the tree depth."""
_CMP = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_TYPES: dict[str, Callable[[str, str], str]] = {
    "double": lambda ty, v: f"{ty} = 'real'",
    "string": lambda ty, v: f"{ty} = 'text'",
    "object": lambda ty, v: f"{ty} = 'object'",
    "array": lambda ty, v: f"{ty} = 'array'",
    "bool": lambda ty, v: f"{ty} IN ('true', 'false')",
    "number": lambda ty, v: f"{ty} IN {_NUM}",
    # MongoDB stores an integer as a 32-bit int when it fits, else as a 64-bit long
    "int": lambda ty, v: f"({ty} = 'integer' AND {v} BETWEEN -2147483648 AND 2147483647)",
    "long": lambda ty, v: f"({ty} = 'integer' AND {v} NOT BETWEEN -2147483648 AND 2147483647)",
}


def json_path(segments: Sequence[str]) -> str:
    """SQLite's JSON path for field segments (the filter checks keep `"` and `\\` out)."""
    return "$" + "".join(f'."{s}"' for s in segments)


def join(op: str, parts: list[str]) -> str:
    """`a OR b OR …` as flat chains of at most _GROUP terms, nested as a shallow tree."""
    if not parts:
        return "1" if op == "AND" else "0"
    while len(parts) > 1:
        parts = [
            parts[i] if len(parts[i : i + _GROUP]) == 1 else "(" + f" {op} ".join(parts[i : i + _GROUP]) + ")"
            for i in range(0, len(parts), _GROUP)
        ]
    return parts[0]


def negate(sql: str) -> str:
    """NOT that treats an undecided (NULL) comparison as false, like everything else here."""
    return f"NOT IFNULL({sql}, 0)"


class Params:
    """Bound parameters, numbered; equal values share one number."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[tuple[str, Any], str] = {}

    def add(self, value: Any) -> str:
        if isinstance(value, bool):
            value = int(value)
        key = (type(value).__name__, value)
        ref = self._index.get(key)
        if ref is None:
            self.values.append(value)
            ref = self._index[key] = f"?{len(self.values)}"
        return ref


@dataclass(frozen=True)
class _Slot:
    """One candidate value: its JSON type (NULL when missing), SQL value, JSON text, elements."""

    ty: str
    val: str
    js: str
    length: str
    each: str


def _at(base: str, path: str) -> _Slot:
    return _Slot(
        ty=f"json_type({base}, {path})",
        val=f"json_extract({base}, {path})",
        js=f"json_extract({base}, {path})",
        length=f"json_array_length({base}, {path})",
        each=f"json_each({base}, {path})",
    )


def _json(alias: str) -> str:
    """An array element as JSON text. SQLite may evaluate a term before the type test ANDed
    with it, so a scalar element (plain SQL text) must never reach a JSON function."""
    return f"(CASE WHEN {alias}.type IN ('object', 'array') THEN {alias}.value ELSE 'null' END)"


def _element(alias: str) -> _Slot:
    return _Slot(
        ty=f"{alias}.type",
        val=f"{alias}.value",
        js=f"{alias}.value",
        length=f"json_array_length({_json(alias)})",
        each=f"json_each({_json(alias)})",
    )


Pred = Callable[[_Slot], str]


def _column_holds(value: Any, kinds: frozenset[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return "boolean" in kinds
    if isinstance(value, (int, float)):
        return bool({"integer", "number"} & kinds)
    if isinstance(value, str):
        return "string" in kinds
    return False


class _Compiler:
    def __init__(self, columns: Mapping[str, frozenset[str]]) -> None:
        self.params = Params()
        self.columns = columns
        self._aliases = 0

    def _alias(self) -> str:
        self._aliases += 1
        return f"e{self._aliases}"

    # -- documents and logical operators ---------------------------------------------------

    def document(self, flt: Mapping[str, Any], root: str, top: bool) -> str:
        parts = []
        for key, value in flt.items():
            if key == "$and":
                parts.append(join("AND", [self.document(s, root, top) for s in value]))
            elif key == "$or":
                parts.append(join("OR", [self.document(s, root, top) for s in value]))
            elif key == "$nor":
                parts.append(negate(join("OR", [self.document(s, root, top) for s in value])))
            elif key.startswith("$"):
                raise ValueError(f"unsupported operator {key}")
            else:
                target = _Path(self, root, key.split("."), top)
                parts.append(self.condition(target, value))
        return join("AND", parts)

    def condition(self, target: _Target, cond: Any) -> str:
        if isinstance(cond, dict) and any(k.startswith("$") for k in cond):
            return join("AND", [self.operator(target, op, arg) for op, arg in cond.items()])
        return self.eq(target, cond)

    # -- field operators -------------------------------------------------------------------

    def operator(self, t: _Target, op: str, arg: Any) -> str:
        if op == "$eq":
            return self.eq(t, arg)
        if op == "$ne":
            return negate(self.eq(t, arg))
        if op == "$in":
            return self.in_(t, arg)
        if op == "$nin":
            return negate(self.in_(t, arg))
        if op in _CMP:
            return self.compare(t, _CMP[op], arg)
        if op == "$exists":
            sql = self.exists(t)
            return sql if arg else negate(sql)
        if op == "$size":
            n = self.params.add(arg)
            return t.any(lambda s: f"({s.ty} = 'array' AND {s.length} = {n})", False)
        if op == "$all":
            return join("AND", [self.eq(t, item) for item in arg]) if arg else "0"
        if op == "$elemMatch":
            return t.any(lambda s: self.elem_match(s, arg), False)
        if op == "$not":
            return negate(self.condition(t, arg))
        if op == "$type":
            test = _TYPES[arg]
            return t.any(lambda s: self._with_elements(s, lambda ty, v, js: test(ty, v)), False)
        raise ValueError(f"unsupported operator {op}")

    def _with_elements(self, s: _Slot, test: Callable[[str, str, str], str]) -> str:
        """The value matches, or it is an array and one of its elements does."""
        a = self._alias()
        inner = test(f"{a}.type", f"{a}.value", f"{a}.value")
        return f"({test(s.ty, s.val, s.js)} OR ({s.ty} = 'array' AND EXISTS (SELECT 1 FROM {s.each} AS {a} WHERE {inner})))"

    def eq(self, t: _Target, value: Any) -> str:
        col = t.column()
        if col and _column_holds(value, col[1]):
            return f'"{col[0]}" IS NULL' if value is None else f'"{col[0]}" = {self.params.add(value)}'
        return t.any(
            lambda s: self._with_elements(s, lambda ty, v, js: self._equals(ty, v, js, value)), value is None
        )

    def _equals(self, ty: str, v: str, js: str, value: Any) -> str:
        if value is None:
            return f"({ty} IS NULL OR {ty} = 'null')"
        if isinstance(value, bool):
            return f"{ty} = '{'true' if value else 'false'}'"
        if isinstance(value, (int, float)):
            return f"({ty} IN {_NUM} AND {v} = {self.params.add(value)})"
        if isinstance(value, str):
            return f"({ty} = 'text' AND {v} = {self.params.add(value)})"
        kind = "object" if isinstance(value, dict) else "array"
        return f"({ty} = '{kind}' AND ewms_json_eq({js}, {self.params.add(orjson.dumps(value).decode())}))"

    def in_(self, t: _Target, items: list[Any]) -> str:
        if not items:
            return "0"
        col = t.column()
        if col and all(_column_holds(i, col[1]) for i in items):
            values = [i for i in items if i is not None]
            parts = [f'"{col[0]}" IN ({", ".join(self.params.add(i) for i in values)})'] if values else []
            if len(values) < len(items):
                parts.append(f'"{col[0]}" IS NULL')
            return join("OR", parts)
        missing = any(i is None for i in items)
        return t.any(
            lambda s: self._with_elements(s, lambda ty, v, js: self._one_of(ty, v, js, items)), missing
        )

    def _one_of(self, ty: str, v: str, js: str, items: list[Any]) -> str:
        strs = [i for i in items if isinstance(i, str)]
        nums = [i for i in items if isinstance(i, (int, float)) and not isinstance(i, bool)]
        parts = []
        if strs:
            parts.append(f"({ty} = 'text' AND {v} IN ({', '.join(self.params.add(i) for i in strs)}))")
        if nums:
            parts.append(f"({ty} IN {_NUM} AND {v} IN ({', '.join(self.params.add(i) for i in nums)}))")
        bools = sorted({"true" if i else "false" for i in items if isinstance(i, bool)})
        if bools:
            parts.append(f"{ty} IN ({', '.join(repr(b) for b in bools)})")
        if any(i is None for i in items):
            parts.append(self._equals(ty, v, js, None))
        parts += [self._equals(ty, v, js, i) for i in items if isinstance(i, (dict, list))]
        return join("OR", parts)

    def compare(self, t: _Target, op: str, value: Any) -> str:
        if isinstance(value, bool):
            types = "('true', 'false')"
        elif isinstance(value, (int, float)):
            types = _NUM
        elif isinstance(value, str):
            types = "('text')"
        else:  # refused for clients (query_limits); the server never sends these
            raise ValueError(f"cannot compare with {type(value).__name__}")
        p = self.params.add(value)
        col = t.column()
        if col and _column_holds(value, col[1]):
            return f'"{col[0]}" {op} {p}'
        return t.any(
            lambda s: self._with_elements(s, lambda ty, v, js: f"({ty} IN {types} AND {v} {op} {p})"), False
        )

    def exists(self, t: _Target) -> str:
        col = t.column()
        if col and "null" not in col[1]:
            return f'"{col[0]}" IS NOT NULL'
        return t.any(lambda s: f"{s.ty} IS NOT NULL", False)

    def elem_match(self, s: _Slot, arg: dict[str, Any]) -> str:
        a = self._alias()
        if any(k.startswith("$") for k in arg):  # conditions on each element itself
            inner = self.condition(_Value(_element(a)), arg)
        else:  # a filter over each element that is a document
            inner = f"{a}.type = 'object' AND {self.document(arg, _json(a), top=False)}"
        return f"({s.ty} = 'array' AND EXISTS (SELECT 1 FROM {s.each} AS {a} WHERE {inner}))"


class _Target:
    """Where a condition looks: `any(pred, missing)` is true if one candidate satisfies `pred`
    (`missing`: whether a missing field satisfies it)."""

    def any(self, pred: Pred, missing: bool) -> str:
        raise NotImplementedError

    def column(self) -> tuple[str, frozenset[str]] | None:
        return None


class _Value(_Target):
    """An array element inside $elemMatch: exactly one candidate, never missing."""

    def __init__(self, slot: _Slot) -> None:
        self.slot = slot

    def any(self, pred: Pred, missing: bool) -> str:
        return pred(self.slot)


class _Path(_Target):
    """A dotted field path below `root` (the document, or an element inside $elemMatch)."""

    def __init__(self, c: _Compiler, root: str, segments: list[str], top: bool) -> None:
        self.c, self.root, self.segments, self.top = c, root, segments, top

    def column(self) -> tuple[str, frozenset[str]] | None:
        if self.top and len(self.segments) == 1 and self.segments[0] in self.c.columns:
            return self.segments[0], self.c.columns[self.segments[0]]
        return None

    def any(self, pred: Pred, missing: bool) -> str:
        return self._walk(self.root, [], self.segments, pred, missing)

    def _walk(self, base: str, prefix: list[str], rest: list[str], pred: Pred, missing: bool) -> str:
        path = self.c.params.add(json_path([*prefix, rest[0]]))
        if len(rest) == 1:
            return pred(_at(base, path))
        # an inner field: missing (so is everything below it), or a document to look into, or an
        # array whose documents are each looked into (one loop over both: a document is read as
        # an array of one); anything else has no such field
        ty = f"json_type({base}, {path})"
        a = self.c._alias()
        docs = (
            f"CASE {ty} WHEN 'array' THEN json_extract({base}, {path}) "
            f"WHEN 'object' THEN json_array(json_extract({base}, {path})) ELSE '[]' END"
        )
        inner = self._walk(_json(a), [], rest[1:], pred, missing)
        found = f"EXISTS (SELECT 1 FROM json_each({docs}) AS {a} WHERE {a}.type = 'object' AND {inner})"
        return f"({ty} IS NULL OR {found})" if missing else found


def compile_filter(flt: Mapping[str, Any], columns: Mapping[str, frozenset[str]]) -> tuple[str, list[Any]]:
    """(WHERE clause, parameters) for `flt`; `columns`: generated column -> JSON types it holds."""
    c = _Compiler(columns)
    sql = c.document(flt, "doc", top=True)
    return sql, c.params.values


def compile_sort(sort: Sequence[tuple[str, int]], columns: Mapping[str, frozenset[str]]) -> str:
    """ORDER BY terms; only generated columns sort (then insertion order breaks ties)."""
    terms = []
    for field, direction in sort:
        if field not in columns:
            raise ValueError(f"cannot sort on {field!r}: not an indexed field")
        terms.append(f'"{field}" {"DESC" if direction < 0 else "ASC"}')
    return ", ".join([*terms, "seq"])


def json_equal(a: Any, b: Any) -> int:
    """SQL function `ewms_json_eq`: MongoDB's equality of two JSON documents or arrays."""
    try:  # SQLite may call this for values the type test beside it has already ruled out
        return int(_same(orjson.loads(a), orjson.loads(b)))
    except (TypeError, ValueError):
        return 0


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y
    if isinstance(x, dict):
        return (
            isinstance(y, dict)
            and list(x) == list(y)  # MongoDB compares documents field by field, in order
            and all(_same(x[k], y[k]) for k in x)
        )
    if isinstance(x, list):
        return (
            isinstance(y, list) and len(x) == len(y) and all(_same(i, j) for i, j in zip(x, y, strict=True))
        )
    return type(x) is type(y) and x == y
