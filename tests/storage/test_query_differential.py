"""Differential test of the SQL filter compiler: random *allowed* filters over random documents
select the same documents on SQLite as on mongomock (the reference).

Where mongomock itself departs from MongoDB, the case is either kept out of the generated data
or the reference is asked the MongoDB way (each is named below, and MongoDB's answer is
checked by hand in test_sql_filter.py):
- Python's `True == 1`: booleans and numbers never share a field here (MongoDB keeps them apart);
- Python's order-blind dict equality: sub-documents always have their keys in one order;
- nested arrays, and array values inside $in/$nin lists: not generated (mongomock compares
  them element-wise where MongoDB compares whole arrays);
- $elemMatch with field conditions only on arrays of documents (mongomock lets negative
  conditions match scalars);
- integers only far from the int32/int64 border (mongomock's border is off by one bit);
- asked the MongoDB way: {field: {}} is {field: {$eq: {}}}; several operators on one field
  are an $and of single ones; {field: {$not: X}} is {$nor: [{field: X}]} and {$exists: false}
  is {$nor: [{field: {$exists: true}}]} (mongomock answers false when a path has no value at
  all, e.g. through an empty array); $all is an $and of equalities (never empty); $size also
  requires an array.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mongomock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ewms_server.query_filter import check_filter
from ewms_server.query_limits import QueryLimits, check_limits
from ewms_server.storage.collections import CollectionSpec, Index
from ewms_server.storage.sqlite import SQLiteStorage

THINGS = CollectionSpec(
    name="things",
    id_field="tid",
    id_prefix="TH",
    component="",
    queryable=True,
    indexes=(Index(("tid",), unique=True), Index(("c_str",)), Index(("c_num",)), Index(("c_bool",))),
    kinds={"tid": "string", "c_str": "string", "c_num": "number|null", "c_bool": "boolean"},
)
FIELDS = frozenset({"n", "s", "b", "arr", "sub", "deep", "missing", "c_str", "c_num", "c_bool"})
LIMITS = QueryLimits(max_depth=8, max_clauses=2000, max_in_items=5000, time_budget_s=10)

# -- values ------------------------------------------------------------------------------------

strs = st.sampled_from(["", "a", "ab", "b", "B", "é", "a b", "10"])
nums = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([-1.5, 0.0, 2.0, 2.5, 1e20, 2**40, -(2**40)]),
)
bools = st.booleans()
nulls = st.none()


def scalars(kind: str) -> st.SearchStrategy[Any]:
    """Values of a field: numbers and booleans never together (see the module docstring)."""
    return st.one_of(nums if kind == "num" else bools, strs, nulls)


def values(kind: str) -> st.SearchStrategy[Any]:
    leaf = scalars(kind)
    return st.one_of(
        leaf,
        st.lists(leaf, max_size=3),
        st.fixed_dictionaries({}, optional={"x": leaf, "y": strs}),
    )


def sub_docs() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={"x": values("num"), "y": strs})


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    optional = {
        "n": values("num"),
        "s": values("num"),
        "b": values("bool"),
        "arr": st.one_of(st.lists(sub_docs(), max_size=3), nums, nulls),
        "sub": st.one_of(sub_docs(), strs, nulls),
        "deep": st.fixed_dictionaries(
            {}, optional={"a": st.lists(st.fixed_dictionaries({}, optional={"b": values("num")}), max_size=2)}
        ),
        "c_str": strs,
        "c_num": st.one_of(nums, nulls),
        "c_bool": bools,
    }
    doc = draw(st.fixed_dictionaries({}, optional=optional))
    return dict(sorted(doc.items()))


# -- filters -----------------------------------------------------------------------------------

PATHS = {  # path -> kind of its scalars
    "n": "num",
    "s": "num",
    "b": "bool",
    "arr": "num",
    "arr.x": "num",
    "arr.y": "num",
    "sub": "num",
    "sub.x": "num",
    "sub.x.x": "num",
    "sub.y": "num",
    "deep.a.b": "num",
    "deep.a": "num",
    "missing": "num",
    "missing.x": "num",
    "c_str": "num",
    "c_num": "num",
    "c_bool": "bool",
}
DOC_ARRAYS = ("arr", "deep.a")
"""Paths whose arrays hold only documents: the only ones $elemMatch with field conditions gets."""
TYPES = ["double", "string", "object", "array", "bool", "int", "long", "number"]


def operators(kind: str, in_not: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    leaf = scalars(kind)
    ordered = st.one_of(nums if kind == "num" else bools, strs)
    ops = [
        st.builds(lambda v: {"$eq": v}, values(kind)),
        st.builds(lambda v: {"$ne": v}, leaf),
        st.builds(lambda o, v: {o: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
        st.builds(lambda v: {"$in": v}, st.lists(leaf, max_size=4)),
        st.builds(lambda v: {"$nin": v}, st.lists(leaf, max_size=3)),
        st.builds(lambda v: {"$exists": v}, st.booleans()),
        st.builds(lambda v: {"$size": v}, st.integers(0, 3)),
        st.builds(lambda t: {"$type": t}, st.sampled_from(TYPES)),
        st.builds(
            lambda o: {"$elemMatch": o},
            st.dictionaries(st.sampled_from(["$gt", "$lt", "$eq", "$ne"]), ordered, min_size=1, max_size=2),
        ),
    ]
    if not in_not:
        ops.append(st.builds(lambda v: {"$all": v}, st.lists(leaf, min_size=1, max_size=2)))
    return st.one_of(ops)


@st.composite
def conditions(draw: st.DrawFn, path: str) -> Any:
    kind = PATHS[path]
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(values(kind))  # {path: value}
    if choice == 1:
        return {"$not": draw(operators(kind, in_not=True))}
    if choice == 2 and path in DOC_ARRAYS:
        inner = draw(st.sampled_from(["x", "y", "b"]))
        return {"$elemMatch": {inner: draw(st.one_of(values("num"), operators("num", in_not=True)))}}
    if choice == 3:  # several operators on one field
        out: dict[str, Any] = {}
        for _ in range(draw(st.integers(2, 3))):
            out.update(draw(operators(kind)))
        return out
    return draw(operators(kind))


@st.composite
def filters(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(draw(st.integers(0 if depth == 0 else 1, 2))):
        if depth < 2 and draw(st.integers(0, 3)) == 0:
            op = draw(st.sampled_from(["$and", "$or", "$nor"]))
            out[op] = draw(st.lists(filters(depth + 1), min_size=1, max_size=3))
        else:
            path = draw(st.sampled_from(sorted(PATHS)))
            out[path] = draw(conditions(path))
    return out


# -- the reference asked the MongoDB way ---------------------------------------------------------


def as_mongodb(flt: dict[str, Any]) -> dict[str, Any]:
    """The same filter, spelled so that mongomock decides it as MongoDB does."""
    parts = []
    for key, value in flt.items():
        if key in ("$and", "$or", "$nor"):
            parts.append({key: [as_mongodb(f) for f in value]})
        elif isinstance(value, dict) and any(k.startswith("$") for k in value):
            for op, arg in value.items():
                if op == "$all":
                    parts += [{key: item} for item in arg]
                elif op == "$not":
                    parts.append({"$nor": [as_mongodb({key: arg})]})
                elif op == "$exists" and not arg:
                    parts.append({"$nor": [{key: {"$exists": True}}]})
                else:
                    parts.append({key: _operator(op, arg)})
        elif value == {}:  # mongomock lets {field: {}} match a missing field
            parts.append({key: {"$eq": {}}})
        else:
            parts.append({key: value})
    return {"$and": parts} if parts else {}


def _operator(op: str, arg: Any) -> dict[str, Any]:
    if op == "$size":
        return {"$type": "array", "$size": arg}
    if op == "$elemMatch" and not any(k.startswith("$") for k in arg):
        return {"$elemMatch": as_mongodb(arg)}
    return {op: arg}


# -- the test ------------------------------------------------------------------------------------


def test_sqlite_selects_what_mongomock_selects(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    store = SQLiteStorage(str(tmp_path / "diff.sqlite3"), collections={"things": THINGS})
    reference = mongomock.MongoClient().db.things
    run = loop.run_until_complete
    run(store.migrate())
    seen = {"matched_some": 0, "matched_none": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(docs=st.lists(documents(), max_size=10), flt=filters())
    def check(docs: list[dict[str, Any]], flt: dict[str, Any]) -> None:
        check_filter(flt, FIELDS, LIMITS.max_depth)  # the generator makes allowed filters only
        check_limits(flt, LIMITS)
        run(store.delete_where("things", {}))
        reference.delete_many({})
        docs = [{"tid": f"T{i:02d}", **d} for i, d in enumerate(docs)]
        if docs:
            run(store.insert("things", docs))
            reference.insert_many([dict(d) for d in docs])
        got = sorted(d["tid"] for d in run(store.find("things", flt, projection=["tid"])))
        want = sorted(d["tid"] for d in reference.find(as_mongodb(flt), {"tid": 1, "_id": 0}))
        assert got == want, f"filter {flt}\nsqlite {got}\nmongomock {want}\ndocs {docs}"
        seen["matched_some" if want else "matched_none"] += 1

    try:
        check()
    finally:
        run(store.close())
        loop.close()
    assert seen["matched_some"] > 50 and seen["matched_none"] > 50  # the test has teeth both ways
