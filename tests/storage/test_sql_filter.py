"""The SQL filter compiler on the cases where mongomock departs from MongoDB (so the
differential test leaves them out): each expectation here is MongoDB's documented behaviour.
Also: the compiled SQL binds every value, and the deepest allowed filter still runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ewms_server.errors import Invalid
from ewms_server.query_filter import check_filter
from ewms_server.query_limits import MAX_NESTING, QueryLimits, check_limits
from ewms_server.storage.base import FilterTooComplex
from ewms_server.storage.sql_filter import compile_filter
from ewms_server.storage.sqlite import SQLiteStorage
from tests.storage.test_query_differential import FIELDS, THINGS

LIMITS = QueryLimits(max_depth=8, max_clauses=50, max_in_items=20, time_budget_s=5)


@pytest.fixture
async def things(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    s = SQLiteStorage(str(tmp_path / "t.sqlite3"), collections={"things": THINGS})
    await s.migrate()
    yield s
    await s.close()


async def matches(store: SQLiteStorage, doc: dict[str, Any], flt: dict[str, Any]) -> bool:
    await store.delete_where("things", {})
    await store.insert("things", [{"tid": "T", **doc}])
    return bool(await store.find("things", flt))


CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # (why, document, filter, does MongoDB match)
    ("booleans are not numbers", {"n": True}, {"n": 1}, False),
    ("numbers are not booleans", {"n": 1}, {"n": True}, False),
    ("... nor in $in", {"n": [0, 1]}, {"n": {"$in": [True]}}, False),
    ("... nor on an indexed column", {"c_bool": True}, {"c_bool": 1}, False),
    ("true is true", {"c_bool": True}, {"c_bool": True}, True),
    (
        "documents compare field by field, in order",
        {"sub": {"x": 1, "y": 2}},
        {"sub": {"y": 2, "x": 1}},
        False,
    ),
    (
        "... by value, across int and float",
        {"sub": {"x": 1.0, "y": [2]}},
        {"sub": {"x": 1, "y": [2.0]}},
        True,
    ),
    ("$in with an array value matches the whole array", {"n": [1, 2]}, {"n": {"$in": [[1, 2]]}}, True),
    ("an element may equal an array", {"n": [[1], 2]}, {"n": [1]}, True),
    ("... but nested arrays are not searched", {"n": [[1], 2]}, {"n": 1}, False),
    ("$all of nothing matches nothing", {"n": [1]}, {"n": {"$all": []}}, False),
    ("$size counts arrays only", {"n": 5}, {"n": {"$size": 1}}, False),
    ("... not documents", {"sub": {"x": 1}}, {"sub": {"$size": 1}}, False),
    ("$type int is 32-bit", {"n": 2**31 - 1}, {"n": {"$type": "int"}}, True),
    ("$type long above it", {"n": 2**31}, {"n": {"$type": "long"}}, True),
    ("... and not int", {"n": 2**31}, {"n": {"$type": "int"}}, False),
    ("$exists false is not-exists", {"arr": [{"x": 1}, {}]}, {"arr.x": {"$exists": False}}, False),
    ("... and holds where no element has it", {"arr": [{"y": 1}, {}]}, {"arr.x": {"$exists": False}}, True),
    ("several operators are decided one by one", {"n": [5, -1]}, {"n": {"$ne": 1, "$gt": 0}}, True),
    ("{} matches only an empty document", {}, {"sub": {}}, False),
    ("... which it does", {"sub": {}}, {"sub": {}}, True),
    (
        "$elemMatch fields look into documents only",
        {"arr": [5]},
        {"arr": {"$elemMatch": {"x": {"$ne": 1}}}},
        False,
    ),
    ("$not holds where a path has no value", {"arr": []}, {"arr.x": {"$not": {"$gt": 1}}}, True),
    ("null matches a missing field", {}, {"sub.x": None}, True),
    ("... and a missing one in an array of documents", {"arr": [{"x": 1}, {}]}, {"arr.x": None}, True),
    ("$ne null needs a value", {"arr": [{"x": 1}, {}]}, {"arr.x": {"$ne": None}}, False),
    ("strings compare by code point", {"s": "é"}, {"s": {"$gt": "z"}}, True),
    ("comparisons stay within a type", {"s": "10"}, {"s": {"$gt": 5}}, False),
    ("ints and floats compare exactly", {"n": 2**53 + 1}, {"n": {"$gt": float(2**53)}}, True),
]


@pytest.mark.parametrize("doc, flt, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_mongodb_semantics(
    things: SQLiteStorage, doc: dict[str, Any], flt: dict[str, Any], expected: bool
) -> None:
    assert await matches(things, doc, flt) is expected


def test_values_and_paths_are_bound_never_pasted() -> None:
    evil = "x'); DROP TABLE things; --"
    sql, params = compile_filter(
        {f"sub.{evil}": evil, "s": {"$in": [evil, 1]}, "arr": {"$elemMatch": {evil: {"$gt": evil}}}},
        {"c_str": frozenset({"string"})},
    )
    assert evil not in sql and "DROP" not in sql
    assert evil in params and '$."x\'); DROP TABLE things; --"' in params


@pytest.mark.parametrize(
    "query, names",
    [
        ({"n": {"$gt": None}}, "comparing with null"),
        ({"n": {"$lte": [1]}}, "comparing with null, a document or an array"),
        ({"n.0": 1}, "array positions"),
        ({'sub.a"b': 1}, "double quote"),
        ({"sub.a\\b": 1}, "backslash"),
        ({".".join(["sub"] * (MAX_NESTING + 2)): 1}, f"more than {MAX_NESTING} levels"),
        (
            {"sub.sub.sub": {"$elemMatch": {"x": {"$elemMatch": {"$elemMatch": {"$gt": 1}}}}}},
            "more than 4 levels",
        ),
        ({"$or": [{"n": i} for i in range(51)]}, "EWMS_QUERY_MAX_CLAUSES (50)"),
        ({"n": {"$in": list(range(11)), "$nin": list(range(10))}}, "EWMS_QUERY_MAX_IN_ITEMS (20)"),
        ({"arr": {"$elemMatch": {'a"': 1}}}, "double quote"),
    ],
)
def test_refused_with_a_400_that_names_the_limit(query: dict[str, Any], names: str) -> None:
    check_filter(query, FIELDS, LIMITS.max_depth)
    with pytest.raises(Invalid, match=names.replace("(", r"\(").replace(")", r"\)")):
        check_limits(query, LIMITS)


def _nested(levels: int) -> dict[str, Any]:
    """Every kind of nesting the allow-list admits, under `levels` logical operators, looking
    MAX_NESTING levels deep."""
    path = ".".join(["sub"] * (MAX_NESTING - 1))
    inner: dict[str, Any] = {path: {"$not": {"$elemMatch": {"x": {"$in": [1, None, "a", {"k": [1]}]}}}}}
    for i in range(levels):
        inner = {["$and", "$or", "$nor"][i % 3]: [inner, {path + ".sub": {"$all": [1, [2]]}}]}
    return inner


async def test_the_deepest_allowed_filter_runs(things: SQLiteStorage) -> None:
    depth = 8
    levels = 0
    while True:  # as many logical levels as the default EWMS_QUERY_MAX_DEPTH lets through
        try:
            check_filter(_nested(levels + 1), FIELDS, depth)
        except Invalid:
            break
        levels += 1
    flt = _nested(levels)
    check_limits(flt, QueryLimits(depth, 2000, 5000, 5))
    await things.insert("things", [{"tid": "A", "sub": {"sub": {"x": 1}}}])
    for f in (flt, _nested(levels + 2)):  # the deepest, and with room to spare
        assert len(await things.find("things", f, budget_s=5)) in (0, 1)
    wide = {"$or": [{f"sub.x{i}.y": {"$elemMatch": {"$gt": i}}} for i in range(1000)]}
    assert await things.find("things", wide, budget_s=5) == []


async def test_a_filter_sqlite_cannot_parse_is_refused_not_crashed(things: SQLiteStorage) -> None:
    """Only reachable with a raised EWMS_QUERY_MAX_DEPTH: a 400, never a 500."""
    with pytest.raises(FilterTooComplex):
        await things.find("things", _nested(60), budget_s=5)
