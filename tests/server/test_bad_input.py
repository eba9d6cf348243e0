"""Bad input of every kind: a clear 4xx, the database unchanged, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from ewms_server.testing import RunningServer
from tests.conftest import workflow_body
from tests.server.helpers import wait_phase

COLLECTIONS = ("workflows", "task_directives", "taskforces", "mqprofiles")


async def snapshot(server: RunningServer) -> dict[str, Any]:
    store = server.deps.store
    return {name: await store.find(name, {}) for name in COLLECTIONS}


async def raw(
    server: RunningServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    role: str = "user",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    resp = await AsyncHTTPClient().fetch(
        server.url + path,
        method=method,
        raise_error=False,
        allow_nonstandard_methods=True,
        body=data if method in ("POST", "PUT", "PATCH") else None,
        headers={"Authorization": f"Bearer {server.token(role=role, sub='alice')}", **(headers or {})},
    )
    try:
        return resp.code, json.loads(resp.body)
    except ValueError:
        return resp.code, resp.body


@pytest.fixture
async def seeded(server: RunningServer) -> dict[str, Any]:
    """One workflow at pending-starter, so every route has an object to aim at."""
    code, made = await raw(server, "POST", "/v1/workflows", workflow_body())
    assert code == 200
    await wait_phase_raw(server, made["taskforces"][0]["taskforce_uuid"])
    return made


async def wait_phase_raw(server: RunningServer, uuid: str) -> None:
    from rest_tools.client import RestClient

    client = RestClient(server.url, token=server.token(role="admin", sub="root"), retries=0)
    await wait_phase(client, uuid, "pending-starter")


def _task(**changes: Any) -> dict[str, Any]:
    body = workflow_body()
    body["tasks"][0].update(changes)
    return body


def _worker(**changes: Any) -> dict[str, Any]:
    body = workflow_body()
    body["tasks"][0]["worker_config"].update(changes)
    return body


def _without(path: tuple[Any, ...]) -> dict[str, Any]:
    body = workflow_body()
    node: Any = body
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return body


BAD_WORKFLOWS = [
    ("not an object", [1, 2], "must be a JSON object"),
    ("no tasks", {"public_queue_aliases": []}, "'tasks' is a required property"),
    ("empty tasks", {"tasks": []}, "body.tasks"),
    ("tasks wrong type", {"tasks": "x"}, "body.tasks"),
    ("unknown top field", {**workflow_body(), "colour": "red"}, "unknown field(s): body.colour"),
    ("unknown task field", _task(gpu=True), "body.tasks[0].gpu"),
    ("unknown worker field", _worker(gpus=1), "body.tasks[0].worker_config.gpus"),
    ("missing worker_config", _without(("tasks", 0, "worker_config")), "worker_config"),
    ("missing task_image", _without(("tasks", 0, "task_image")), "task_image"),
    ("n_workers string", _task(n_workers="3"), "body.tasks[0].n_workers"),
    ("n_workers zero", _task(n_workers=0), "body.tasks[0].n_workers"),
    ("n_workers float", _task(n_workers=1.5), "body.tasks[0].n_workers"),
    ("n_cores negative", _worker(n_cores=-1), "worker_config.n_cores"),
    ("memory not a size", _worker(worker_memory="lots"), "worker_config.worker_memory"),
    ("priority negative", {**workflow_body(), "priority": -1}, "body.priority"),
    ("priority bool", {**workflow_body(), "priority": True}, "body.priority"),
    ("unknown location", _task(cluster_locations=["mars"]), "unknown cluster location 'mars'"),
    ("duplicate location", _task(cluster_locations=["local", "local"]), "duplicated location"),
    ("bad alias", _task(input_queue_aliases=["has space"]), "input_queue_aliases[0]"),
    (
        "alias in and out",
        _task(input_queue_aliases=["a"], output_queue_aliases=["a"]),
        "both input and output",
    ),
    ("public alias unused", {**workflow_body(), "public_queue_aliases": ["nope"]}, "not an input or output"),
    ("task_env non-string", _task(task_env={"A": 1}), "body.tasks[0].task_env.A"),
    ("pilot image_source", _task(pilot_config={"image_source": "ftp"}), "pilot_config.image_source"),
]


@pytest.mark.parametrize("body,message", [b[1:] for b in BAD_WORKFLOWS], ids=[b[0] for b in BAD_WORKFLOWS])
async def test_bad_workflow_post(
    server: RunningServer, seeded: dict[str, Any], body: Any, message: str
) -> None:
    before = await snapshot(server)
    code, err = await raw(server, "POST", "/v1/workflows", body)
    assert code == 400, err
    assert err["code"] == 400 and message in err["error"], err
    assert await snapshot(server) == before


@pytest.mark.parametrize(
    "raw_body,message",
    [
        (b"{not json", "not valid JSON"),
        (b"", "a JSON object is required"),
        (b"\xff\xfe", "not valid JSON"),
        (b'"a string"', "must be a JSON object"),
        (b"null", "must be a JSON object"),
    ],
)
async def test_non_json(server: RunningServer, seeded: dict[str, Any], raw_body: bytes, message: str) -> None:
    before = await snapshot(server)
    code, err = await raw(server, "POST", "/v1/workflows", raw_body)
    assert code == 400 and message in err["error"]
    assert await snapshot(server) == before


async def test_oversized_body(server: RunningServer, seeded: dict[str, Any]) -> None:
    before = await snapshot(server)
    body = workflow_body()
    body["tasks"][0]["task_args"] = "x" * (server.deps.cfg.max_body_bytes + 10)
    code, err = await raw(server, "POST", "/v1/workflows", body)
    assert code == 413 and "larger than" in err["error"]
    assert await snapshot(server) == before


async def test_tms_bad_inputs(server: RunningServer, seeded: dict[str, Any]) -> None:
    uuid = seeded["taskforces"][0]["taskforce_uuid"]
    cases = [
        ("GET", "/v1/tms/pending-starter/taskforces", None, 400, "query.schedd: required"),
        ("GET", "/v1/tms/pending-starter/taskforces?schedd=a&schedd=b", None, 400, "more than once"),
        ("GET", "/v1/tms/pending-starter/taskforces?schedd=", None, 400, "query.schedd: length"),
        ("GET", "/v1/tms/pending-stopper/taskforces", None, 400, "query.schedd"),
        ("POST", f"/v1/tms/condor-submit/taskforces/{uuid}", {"cluster_id": "7"}, 400, "body.cluster_id"),
        (
            "POST",
            f"/v1/tms/condor-submit/taskforces/{uuid}",
            {"cluster_id": 7, "n_workers": 1, "submit_dict": {}},
            400,
            "job_event_log_fpath",
        ),
        ("POST", f"/v1/tms/condor-submit/taskforces/{uuid}", {}, 400, "required"),
        ("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed", {"error": 5}, 400, "body.error"),
        ("POST", f"/v1/tms/condor-rm/taskforces/{uuid}", {"x": 1}, 400, "unknown field(s): body.x"),
        ("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {}, 400, "condor_complete_ts"),
        (
            "POST",
            f"/v1/tms/condor-complete/taskforces/{uuid}",
            {"condor_complete_ts": "now"},
            400,
            "condor_complete_ts",
        ),
        (
            "POST",
            "/v1/tms/statuses/taskforces",
            {"compound_statuses_by_taskforce": {uuid: {"RUNNING": {"Tasking": -1}}}},
            400,
            "Tasking",
        ),
        (
            "POST",
            "/v1/tms/statuses/taskforces",
            {"compound_statuses_by_taskforce": {uuid: {"RUNNING": 3}}},
            400,
            "RUNNING",
        ),
        ("POST", "/v1/tms/statuses/taskforces", {"statuses": {}}, 400, "unknown field(s): body.statuses"),
        ("POST", f"/v1/tms/condor-rm/taskforces/{'x' * 65}", None, 400, "path.taskforce_uuid"),
        ("DELETE", f"/v1/taskforces/{uuid}", None, 405, "DELETE is not allowed"),
    ]
    before = await snapshot(server)
    for method, path, body, want, message in cases:
        code, err = await raw(server, method, path, body, role="system-tms")
        assert (code, message in err["error"]) == (want, True), (method, path, err)
    assert await snapshot(server) == before


async def test_user_route_bad_inputs(server: RunningServer, seeded: dict[str, Any]) -> None:
    wid = seeded["workflow"]["workflow_id"]
    tid = seeded["task_directives"][0]["task_id"]
    cases = [
        ("GET", "/v1/workflows/WF-nope", None, 404, "no workflow WF-nope"),
        ("GET", "/v1/task-directives/TK-nope", None, 404, "no task directive"),
        ("GET", "/v1/taskforces/TF-nope", None, 404, "no taskforce"),
        ("GET", "/v1/no/such/route", None, 404, "no route"),
        ("POST", f"/v1/workflows/{wid}/actions/abort", {"why": "x"}, 400, "must be empty"),
        ("POST", "/v1/workflows/WF-nope/actions/finished", None, 404, "no workflow"),
        (
            "POST",
            f"/v1/task-directives/{tid}/actions/add-workers",
            {"cluster_location": "local"},
            400,
            "n_workers",
        ),
        (
            "POST",
            f"/v1/task-directives/{tid}/actions/add-workers",
            {"cluster_location": "local", "n_workers": "2"},
            400,
            "body.n_workers",
        ),
        ("POST", "/v1/query/workflows", {"query": [1]}, 400, "body.query"),
        ("POST", "/v1/query/workflows", {"projection": "phase"}, 400, "body.projection"),
        ("POST", "/v1/query/taskforces", {"projection": ["no_such_field"]}, 400, "unknown field"),
        ("POST", "/v1/query/taskforces", {"after": "garbage"}, 400, "body.after"),
        ("POST", "/v1/query/taskforces", {"query": {"phase": {"$where": "1"}}}, 400, "$where"),
        ("POST", "/v1/query/taskforces", {"limit": 5}, 400, "unknown field(s): body.limit"),
        # the server's bookkeeping is no field of the API: not in a projection, not in a filter
        ("POST", "/v1/query/taskforces", {"projection": ["lease_until"]}, 400, "unknown field"),
        ("POST", "/v1/query/taskforces", {"query": {"n_failed_submits": 0}}, 400, "n_failed_submits"),
        ("POST", "/v1/query/workflows", {"query": {"queues_deleted": False}}, 400, "queues_deleted"),
    ]
    before = await snapshot(server)
    for method, path, body, want, message in cases:
        code, err = await raw(server, method, path, body)
        assert code == want and message in err["error"], (method, path, code, err)
    assert await snapshot(server) == before


def _nested(depth: int, kind: type) -> bytes:
    opening, closing = (b"[", b"]") if kind is list else (b'{"a": ', b"}")
    return opening * depth + b"1" + closing * depth


async def test_once_reachable_500s_are_clear_400s(server: RunningServer, seeded: dict[str, Any]) -> None:
    """Issue 9, finding 5 (and what a property test of the query language found next to it):
    each of these answered 500; now a 400 that says why."""
    uuid = seeded["taskforces"][0]["taskforce_uuid"]
    tid = seeded["task_directives"][0]["task_id"]
    q = "/v1/query/"
    cases: list[tuple[str, str, Any, str]] = [
        (
            "user",
            q + "workflows",
            {"projection": ["workflow_id", "workflow_id.x"]},
            "inside the id 'workflow_id'",
        ),
        (
            "user",
            q + "taskforces",
            {"projection": ["phase_change_log", "phase_change_log.context"]},
            "is inside",
        ),
        ("user", q + "taskforces", {"projection": ["phase.a.b"]}, "'phase.a.b': phase has no field 'a'"),
        (
            "user",
            q + "task-directives",
            {"projection": ["cluster_locations.a"]},
            "cluster_locations has no field",
        ),
        (
            "user",
            q + "task-directives",
            {"query": {"task_env": {"$not": {"x": "y"}}}},
            "$not: must be an operator",
        ),
        ("user", q + "task-directives", {"query": {"task_env": {"$not": {}}}}, "$not: must be an operator"),
        (
            "user",
            q + "workflows",
            {"query": {"priority": {"$not": {"$gt": 1, "x": 2}}}},
            "$not: must be an operator",
        ),
    ]
    # a body nested about 1,000 deep, and far deeper, in any field of any route that takes one
    routes = [
        ("user", "/v1/workflows", "tasks"),
        ("user", "/v1/query/workflows", "query"),
        ("user", f"/v1/task-directives/{tid}/actions/add-workers", "cluster_location"),
        ("system-tms", f"/v1/tms/condor-submit/taskforces/{uuid}", "submit_dict"),
        ("system-tms", f"/v1/tms/condor-complete/taskforces/{uuid}", "condor_complete_ts"),
        ("system-tms", "/v1/tms/statuses/taskforces", "compound_statuses_by_taskforce"),
    ]
    for role, path, field in routes:
        for depth in (65, 1000, 1020, 5000):
            for kind in (list, dict):
                body = b'{"%s": %s}' % (field.encode(), _nested(depth, kind))
                cases.append((role, path, body, "nested deeper than" if depth < 1024 else "not valid JSON"))
    # deeper than a JSON decoder could recurse (2 MB: within the statuses route's limit)
    big = b'{"compound_statuses_by_taskforce": %s}' % _nested(1_000_000, list)
    cases.append(("system-tms", "/v1/tms/statuses/taskforces", big, "not valid JSON"))
    before = await snapshot(server)
    failures = []
    for role, path, body, message in cases:
        code, err = await raw(server, "POST", path, body, role=role)
        if code != 400 or message not in err["error"]:
            failures.append(f"{path} {str(body)[:80]}: {code} {err}")
    assert not failures, "\n".join(failures)
    assert await snapshot(server) == before
    # the deepest nesting a filter may have (EWMS_QUERY_MAX_DEPTH, 8) still works
    query: dict[str, Any] = {"priority": 50}
    for _ in range(6):
        query = {"$and": [query]}
    code, found = await raw(server, "POST", "/v1/query/workflows", {"query": query})
    assert code == 200 and len(found["workflows"]) == 1
