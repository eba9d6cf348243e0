"""/v1/query/*: the filter language is a safe subset, and the caller's scope always applies.

Every forbidden operator is tried at the top level, nested inside $and/$or/$nor, inside
$elemMatch/$not, inside $in/$nin/$all lists and hidden inside plain field values; each is a
400 naming the operator, and (a spy on the collections proves it) never reaches the database.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from ewms_server.testing import RunningServer
from tests.conftest import wait_until, workflow_body

ROUTES = {"workflows": "workflows", "task-directives": "task_directives", "taskforces": "taskforces"}
ID_FIELD = {"workflows": "workflow_id", "task_directives": "task_id", "taskforces": "taskforce_uuid"}
FIELD = {"workflows": "priority", "task-directives": "task_image", "taskforces": "phase"}
"""A plain field of each collection, to hang operators on."""

FORBIDDEN: dict[str, Any] = {
    "$where": "sleep(5000) || true",
    "$function": {"body": "function() { return true; }", "args": [], "lang": "js"},
    "$accumulator": {
        "init": "function() { return 0; }",
        "accumulate": "function(s) { return s + 1; }",
        "accumulateArgs": [],
        "merge": "function(a, b) { return a + b; }",
        "lang": "js",
    },
    "$expr": {"$eq": ["$owner", "alice"]},
    "$regex": "^(a+)+$",
    "$options": "i",
    "$jsonSchema": {"required": ["owner"]},
    "$text": {"$search": "alice"},
    "$lookup": {"from": "mqprofiles", "localField": "workflow_id", "foreignField": "workflow_id", "as": "q"},
    "$foo": 1,
    "$WHERE": "true",
    "$comment": "hi",
    "$mod": [2, 0],
    "$natural": 1,
    "$sampleRate": 0.5,
    "$rand": {},
    "$geoWithin": {"$center": [[0, 0], 1]},
    "$bitsAllSet": 1,
}


def placements(op: str, arg: Any, f: str) -> Iterator[tuple[str, dict[str, Any]]]:
    x = {op: arg}
    yield "at the top level", x
    yield "in $and", {"$and": [{f: "a"}, x]}
    yield "in $or", {"$or": [x]}
    yield "in $nor", {"$nor": [{f: "a"}, x]}
    yield "deep in $and/$or/$nor", {"$and": [{"$or": [{"$nor": [x]}]}]}
    yield "as a field operator", {f: x}
    yield "next to an allowed operator", {f: {"$ne": "a", op: arg}}
    yield "in a field operator inside $or", {"$or": [{f: "a"}, {f: x}]}
    yield "in $not", {f: {"$not": x}}
    yield "in $elemMatch", {f: {"$elemMatch": x}}
    yield "on a field in $elemMatch", {f: {"$elemMatch": {"a": x}}}
    yield "in a sub-document in $elemMatch", {f: {"$elemMatch": {"a": {"b": x}}}}
    yield "in an $in list", {f: {"$in": ["a", x]}}
    yield "in a $nin list", {f: {"$nin": [x]}}
    yield "in an $all list", {f: {"$all": [x]}}
    yield "in an $eq value", {f: {"$eq": x}}
    yield "in a $gt value", {f: {"$gt": [x]}}
    yield "inside a plain value", {f: {"x": x}}
    yield "inside a plain list value", {f: ["a", x]}
    yield "deep inside a plain value", {f: {"x": {"y": [{"z": x}]}}}
    yield "on a dotted path", {f"{f}.sub": x}


# -- harness -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any


class Spy:
    """Records every read the query code (run_query) makes on the store."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def install(self, server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
        store = server.deps.store
        for method in ("find", "get", "count"):
            monkeypatch.setattr(store, method, self._wrap(method, getattr(store, method)))

    def _wrap(self, method: str, real: Any) -> Any:
        def spy(coll: str, filter: Any, *args: Any, **kwargs: Any) -> Any:
            frame: Any = sys._getframe(1)
            for _ in range(8):  # the query code, or something it called
                if frame is None:
                    break
                if frame.f_code.co_name == "run_query":
                    self.calls.append((coll, method, json.loads(json.dumps(filter))))
                    break
                frame = frame.f_back
            return real(coll, filter, *args, **kwargs)

        return spy


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"EWMS_QUERY_PAGE_DOCS": "2"}  # small pages: every listing below pages with `after`


@pytest.fixture
async def spy(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Spy]:
    s = Spy()
    s.install(server, monkeypatch)
    yield s


class Api:
    def __init__(self, srv: RunningServer) -> None:
        self.srv = srv
        self.http = AsyncHTTPClient()
        self.tokens = {
            "alice": srv.token(role="user", sub="alice"),
            "bob": srv.token(role="user", sub="bob"),
            "tms": srv.token(role="system-tms", sub="tms-1"),
            "admin": srv.token(role="admin", sub="root"),
        }

    async def post(self, who: str, path: str, body: Any, *, raw: bytes | None = None) -> Reply:
        r = await self.http.fetch(
            self.srv.url + path,
            method="POST",
            body=raw if raw is not None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.tokens[who]}", "Content-Type": "application/json"},
            raise_error=False,
            request_timeout=30,
        )
        return Reply(r.code, json.loads(r.body) if r.body else None)

    async def query(self, who: str, route: str, body: Any) -> Reply:
        return await self.post(who, f"/v1/query/{route}", body)

    async def query_all(
        self, who: str, route: str, query: dict[str, Any], **extra: Any
    ) -> list[dict[str, Any]]:
        """Every page, following next_after."""
        key = ROUTES[route]
        out: list[dict[str, Any]] = []
        after = extra.pop("after", None)
        for _ in range(100):
            r = await self.query(who, route, {"query": query, "after": after, **extra})
            assert r.status == 200, (who, route, query, r.status, r.body)
            out += r.body[key]
            after = r.body["next_after"]
            if after is None:
                return out
        raise AssertionError("pagination does not end")


@dataclass
class World:
    alice_hi: dict[str, Any]
    alice_lo: dict[str, Any]
    bob: dict[str, Any]

    def ids(self, *names: str, coll: str) -> set[str]:
        out = set()
        for n in names:
            created = getattr(self, n)
            if coll == "workflows":
                out.add(created["workflow"]["workflow_id"])
            else:
                out |= {d[ID_FIELD[coll]] for d in created[coll]}
        return out


async def _world(api: Api) -> World:
    async def create(who: str, **kw: Any) -> dict[str, Any]:
        r = await api.post(who, "/v1/workflows", workflow_body(**kw))
        assert r.status == 200, r.body
        return r.body

    world = World(
        alice_hi=await create("alice", n_tasks=2, priority=70),
        alice_lo=await create("alice", n_tasks=1, priority=30),
        bob=await create("bob", n_tasks=1, priority=70),
    )
    store = api.srv.deps.store

    async def launched() -> bool:
        return await store.count("taskforces", {"phase": "pending-starter"}) == 4

    await wait_until(launched)
    return world


def _ids(docs: list[dict[str, Any]], coll: str) -> set[str]:
    return {d[ID_FIELD[coll]] for d in docs}


# -- forbidden operators ---------------------------------------------------------------


@pytest.mark.parametrize("backend", [None], ids=["sqlite"])  # refused before any store is involved
@pytest.mark.parametrize("route", list(ROUTES))
async def test_forbidden_operators_are_refused_before_the_database(
    server: RunningServer, spy: Spy, route: str
) -> None:
    api = Api(server)
    await _world(api)
    cases = [
        (op, where, query, who)
        for op, arg in FORBIDDEN.items()
        for where, query in placements(op, arg, FIELD[route])
        # refused for every role: even an admin's filter is checked
        for who in (("admin", "alice") if route == "workflows" else ("admin",))
    ]

    async def attempt(op: str, where: str, query: dict[str, Any], who: str) -> str | None:
        r = await api.query(who, route, {"query": query})
        if r.status != 400 or op not in r.body.get("error", ""):
            return f"{op} {where} ({who}): {r.status} {r.body} for {json.dumps(query)}"
        return None

    failures = []
    for i in range(0, len(cases), 10):
        failures += [f for f in await asyncio.gather(*(attempt(*c) for c in cases[i : i + 10])) if f]
    assert not failures, f"{len(failures)}/{len(cases)} not refused:\n" + "\n".join(failures[:40])
    assert spy.calls == [], "a refused filter reached the database"
    # the spy does see the queries that are allowed
    assert (await api.query("alice", route, {"query": {FIELD[route]: "a"}})).status == 200
    assert len(spy.calls) == 1


@pytest.mark.parametrize(
    "query, names",
    [
        ({"nonexistent": 1}, "nonexistent"),
        ({"_id": {"$exists": True}}, "_id"),
        ({"auth_token": {"$exists": True}}, "auth_token"),
        ({"owner.$where": "1"}, "owner.$where"),
        ({"owner..x": "1"}, "owner..x"),
        ({"owner.x\u0000y": "1"}, "owner.x"),
        ({"": "1"}, "''"),
        ({"$and": [{"priority": 1}, {"mqprofiles": {"$exists": True}}]}, "mqprofiles"),
        ({"$or": [{"__proto__": 1}]}, "__proto__"),
        ({"priority": {"$elemMatch": {"a.b": 1}}}, "a.b"),
        ({"priority": {"$elemMatch": {"$x": 1}}}, "$x"),
        ({"priority": {"a\u0000b": 1}}, "NUL"),
        ({"priority": {"$type": "javascript"}}, "$type"),
        ({"priority": {"$type": 13}}, "$type"),
        ({"priority": {"$size": -1}}, "$size"),
        ({"priority": {"$size": 2**70}}, "$size"),
        ({"priority": 2**63}, "64-bit"),
        ({"priority": {"$in": [2**64 - 1]}}, "64-bit"),
        ({"priority": {"$exists": 1}}, "$exists"),
        ({"priority": {"$in": "abc"}}, "$in"),
        ({"priority": {"$all": {"a": 1}}}, "$all"),
        ({"priority": {"$not": 5}}, "$not"),
        ({"priority": {"$elemMatch": [1]}}, "$elemMatch"),
        ({"$and": []}, "$and"),
        ({"$or": {"priority": 1}}, "$or"),
        ({"$nor": [1]}, "$nor"),
        ({"$and": [{"priority": 1}] * 1001}, "$and"),
        ({"priority": {"$in": list(range(1001))}}, "$in"),
        ({"priority": [0] * 1001}, "list"),
    ],
)
async def test_bad_filters_name_the_offender(
    server: RunningServer, spy: Spy, query: dict[str, Any], names: str
) -> None:
    api = Api(server)
    r = await api.query("admin", "workflows", {"query": query})
    assert r.status == 400 and names in r.body["error"], r.body
    assert spy.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {"query": []},
        {"query": "x"},
        {"query": 1},
        {"query": None},
        {"query": {}, "x": 1},
        {"projection": ["nonexistent"]},
        {"projection": ["auth_token"]},
        {"projection": ["$where"]},
        {"projection": "owner"},
        {"projection": ["owner"] * 65},
    ],
)
async def test_bad_bodies(server: RunningServer, spy: Spy, body: dict[str, Any]) -> None:
    api = Api(server)
    for route in ROUTES:
        r = await api.query("admin", route, body)
        assert r.status == 400, (route, body, r.body)
    assert spy.calls == []


async def test_too_deep_filters(server: RunningServer, spy: Spy) -> None:
    api = Api(server)
    max_depth = server.deps.cfg.query_max_depth

    def logical(levels: int) -> dict[str, Any]:
        q: dict[str, Any] = {"priority": 1}
        for i in range(levels):
            q = {("$and", "$or", "$nor")[i % 3]: [q]}
        return q

    def value(levels: int) -> dict[str, Any]:
        v: Any = 1
        for _ in range(levels):
            v = {"a": v}
        return {"priority": v}

    def elem(levels: int) -> dict[str, Any]:
        v: Any = {"$eq": 1}
        for _ in range(levels):
            v = {"$elemMatch": {"a": v}}
        return {"priority": v}

    def nots(levels: int) -> dict[str, Any]:
        v: Any = {"$eq": 1}
        for _ in range(levels):
            v = {"$not": v}
        return {"priority": v}

    for build in (logical, value, elem, nots):
        assert (await api.query("admin", "workflows", {"query": build(2)})).status == 200, build.__name__
        for levels in (max_depth, max_depth + 5, 200):
            r = await api.query("admin", "workflows", {"query": build(levels)})
            assert r.status == 400 and "deeper than" in r.body["error"], (build.__name__, levels, r.body)
    n_ok = len(spy.calls)
    assert n_ok == 4
    # deeper than the JSON parser goes: still a 400, never a 500
    raw = b'{"query": {"priority": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}}"
    r = await api.post("admin", "/v1/query/workflows", None, raw=raw)
    assert r.status == 400, r.body
    raw = b'{"query": ' + b'{"$and": [' * 3000 + b"{}" + b"]}" * 3000 + b"}"
    r = await api.post("admin", "/v1/query/workflows", None, raw=raw)
    assert r.status == 400, r.body
    assert len(spy.calls) == n_ok


# -- after ---------------------------------------------------------------------------


BAD_AFTER: list[tuple[str, Any]] = [
    ("garbage", "garbage"),
    ("empty", ""),
    ("over-long", "WF-" + "0" * 62),
    ("huge", "WF-" + "0" * 100_000),
    ("an id with a suffix", "WF-000000000000-0000-000000' || '1'=='1"),
    ("an id with NUL", "WF-000000000000-0000-000000\u0000"),
    ("lowercase prefix", "wf-000000000000-0000-000000"),
    ("an operator", {"$gt": ""}),
    ("an operator on the id", {"workflow_id": {"$ne": None}}),
    ("a list", ["WF-000000000000-0000-000000"]),
    ("a number", 5),
    ("true", True),
]


@pytest.mark.parametrize("after", [a for _, a in BAD_AFTER], ids=[w for w, _ in BAD_AFTER])
async def test_bad_after_is_400(server: RunningServer, spy: Spy, after: Any) -> None:
    api = Api(server)
    for route in ROUTES:
        for who in ("bob", "admin"):
            r = await api.query(who, route, {"query": {}, "after": after})
            assert r.status == 400 and "after" in r.body["error"], (route, who, r.status, r.body)
    assert spy.calls == []


async def test_after_of_another_collection_is_400(server: RunningServer, spy: Spy) -> None:
    api = Api(server)
    shapes = {"workflows": "TF-", "task-directives": "WF-", "taskforces": "Q-"}
    for route, prefix in shapes.items():
        for p in (prefix, "A-", "ZZ-"):
            r = await api.query("admin", route, {"query": {}, "after": f"{p}000000000000-0000-000000"})
            assert r.status == 400 and "after" in r.body["error"], (route, p, r.status, r.body)
    assert spy.calls == []


async def test_after_cannot_escape_the_scope(server: RunningServer, spy: Spy) -> None:
    api = Api(server)
    world = await _world(api)
    for route, coll in ROUTES.items():
        bobs = world.ids("bob", coll=coll)
        alices = world.ids("alice_hi", "alice_lo", coll=coll)
        lowest = {"workflows": "WF", "task_directives": "TK", "taskforces": "TF"}[
            coll
        ] + "-000000000000-0000-000000"
        for after in (lowest, sorted(alices)[0], min(bobs | alices)):
            docs = await api.query_all("bob", route, {}, after=after)
            assert _ids(docs, coll) <= bobs, (route, after)
    # the filter the database gets is the caller's ANDed with its scope and the page start
    spy.calls.clear()
    after = sorted(world.ids("alice_hi", coll="workflows"))[0]
    await api.query("bob", "workflows", {"query": {"owner": "alice"}, "after": after})
    assert spy.calls == [
        (
            "workflows",
            "find",
            {"$and": [{"owner": "alice"}, {"owner": "bob"}, {"workflow_id": {"$gt": after}}]},
        )
    ]


# -- the scope always applies --------------------------------------------------------------


SCOPE_ESCAPES: list[dict[str, Any]] = [
    {},
    {"owner": "alice"},
    {"owner": {"$ne": "bob"}},
    {"owner": {"$in": ["alice", "root"]}},
    {"owner": {"$exists": True}},
    {"$or": [{"owner": "alice"}, {"owner": "bob"}]},
    {"$or": [{"owner": "alice"}, {"owner": {"$exists": True}}]},
    {"$nor": [{"owner": "bob"}]},
    {"owner": {"$not": {"$eq": "bob"}}},
]


async def test_a_user_never_gets_another_users_objects(server: RunningServer, spy: Spy) -> None:
    api = Api(server)
    world = await _world(api)
    for route, coll in ROUTES.items():
        bobs = world.ids("bob", coll=coll)
        alices = world.ids("alice_hi", "alice_lo", coll=coll)
        for query in SCOPE_ESCAPES:
            docs = await api.query_all("bob", route, query)
            assert _ids(docs, coll) <= bobs and all(d["owner"] == "bob" for d in docs), (route, query)
        wid = world.alice_hi["workflow"]["workflow_id"]
        assert await api.query_all("bob", route, {"workflow_id": wid}) == []
        # bob's own query {} gives exactly his; alice's exactly hers; an admin's everything
        assert _ids(await api.query_all("bob", route, {}), coll) == bobs
        assert _ids(await api.query_all("alice", route, {}), coll) == alices
        assert _ids(await api.query_all("admin", route, {}), coll) == alices | bobs
        assert _ids(await api.query_all("admin", route, {"owner": "alice"}), coll) == alices
    # the TMS may query taskforces (it re-finds its clusters after a restart), nothing else
    assert _ids(await api.query_all("tms", "taskforces", {}), "taskforces") == world.ids(
        "alice_hi", "alice_lo", "bob", coll="taskforces"
    )
    for route in ("workflows", "task-directives"):
        assert (await api.query("tms", route, {"query": {}})).status == 403
    # every find made for bob carried his scope
    bob_calls = [c for c in spy.calls if '"bob"' in json.dumps(c[2])]
    assert bob_calls and all({"owner": "bob"} in c[2].get("$and", [c[2]]) for c in bob_calls)


# -- what is allowed works ---------------------------------------------------------------


ALLOWED: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # (route, alice's query, which of alice's workflows' objects it finds)
    ("workflows", {"priority": {"$gte": 60}}, ("alice_hi",)),
    ("workflows", {"$or": [{"priority": 70}, {"priority": 30}]}, ("alice_hi", "alice_lo")),
    ("workflows", {"$nor": [{"priority": 70}]}, ("alice_lo",)),
    ("workflows", {"$and": [{"priority": {"$gt": 10}}, {"priority": {"$lt": 50}}]}, ("alice_lo",)),
    ("workflows", {"deactivated": None}, ("alice_hi", "alice_lo")),
    ("workflows", {"priority": {"$not": {"$gt": 50}}}, ("alice_lo",)),
    ("workflows", {"priority": {"$in": [30, 99]}}, ("alice_lo",)),
    ("workflows", {"priority": {"$nin": [30]}}, ("alice_hi",)),
    ("workflows", {"priority": {"$type": "int"}}, ("alice_hi", "alice_lo")),
    ("workflows", {"deactivated_ts": {"$exists": True}}, ("alice_hi", "alice_lo")),
    ("workflows", {"priority": {"$eq": 70}, "owner": "alice"}, ("alice_hi",)),
    ("task-directives", {"input_queues": {"$size": 1}}, ("alice_hi", "alice_lo")),
    ("task-directives", {"cluster_locations": {"$all": ["local"]}}, ("alice_hi", "alice_lo")),
    ("task-directives", {"task_env": {}}, ("alice_hi", "alice_lo")),
    (
        "taskforces",
        {"phase_change_log": {"$elemMatch": {"source_entity": "user:alice"}}},
        ("alice_hi", "alice_lo"),
    ),
    ("taskforces", {"phase_change_log.source_entity": {"$in": ["user:alice"]}}, ("alice_hi", "alice_lo")),
    ("taskforces", {"worker_config.n_cores": {"$lte": 1}, "priority": 30}, ("alice_lo",)),
    (
        "taskforces",
        {"phase_change_log": {"$elemMatch": {"target_phase": "pending-starter", "was_successful": True}}},
        ("alice_hi", "alice_lo"),
    ),
    ("taskforces", {"phase": {"$in": ["condor-submit", "pending-stopper"]}}, ()),
]


async def test_allowed_filters_work(server: RunningServer, spy: Spy) -> None:
    api = Api(server)
    world = await _world(api)
    failures = []
    for route, query, names in ALLOWED:
        coll = ROUTES[route]
        want = world.ids(*names, coll=coll) if names else set()
        got = _ids(await api.query_all("alice", route, query), coll)
        if got != want:
            failures.append(f"{route} {json.dumps(query)}: expected {sorted(want)}, got {sorted(got)}")
        # bob's same query finds none of alice's
        bobs = _ids(await api.query_all("bob", route, query), coll)
        assert not bobs & world.ids("alice_hi", "alice_lo", coll=coll), (route, query)
    assert not failures, "\n".join(failures)
    # a projection returns just those fields
    r = await api.query(
        "alice", "workflows", {"query": {"priority": 70}, "projection": ["priority", "owner"]}
    )
    assert r.status == 200 and r.body["workflows"] == [{"priority": 70, "owner": "alice"}]
    # pages of 2 hold the 3 task directives of alice
    r = await api.query("alice", "task-directives", {"query": {}})
    assert len(r.body["task_directives"]) == 2 and r.body["next_after"]
    r2 = await api.query("alice", "task-directives", {"query": {}, "after": r.body["next_after"]})
    assert len(r2.body["task_directives"]) == 1 and r2.body["next_after"] is None
