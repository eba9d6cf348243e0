"""Per-user quotas (issue 9, finding 7): each limit answers 429 with Retry-After and a message
naming its setting, creates nothing, spares admins and other users; counts hold under
concurrent requests and across replicas sharing one store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from ewms_server.config import Config, ConfigError, settings_help
from ewms_server.quotas import SETTING_NAMES, WINDOW_S, _retry_after
from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, workflow_body

LIMITS = {
    "EWMS_USER_MAX_ACTIVE_WORKFLOWS": "0",
    "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "0",
    "EWMS_MAX_TASKFORCES_PER_WORKFLOW": "0",
    "EWMS_USER_MAX_ADD_WORKERS_PER_MIN": "0",
}


async def call(srv: RunningServer, sub: str, path: str, body: Any, role: str = "user") -> HTTPResponse:
    return await AsyncHTTPClient().fetch(
        srv.url + path,
        method="POST",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {srv.token(role=role, sub=sub)}"},
        raise_error=False,
    )


async def counts(srv: RunningServer) -> tuple[int, int, int, int]:
    store = srv.deps.store
    return (
        await store.count("workflows", {}),
        await store.count("task_directives", {}),
        await store.count("taskforces", {}),
        await store.count("mqprofiles", {}),
    )


async def refused(srv: RunningServer, sub: str, path: str, body: Any, setting: str) -> int:
    """Assert a 429 naming `setting` that created nothing; return its Retry-After."""
    before = await counts(srv)
    r = await call(srv, sub, path, body)
    assert r.code == 429, (r.code, r.body)
    assert setting in json.loads(r.body)["error"] and setting in r.reason
    assert await counts(srv) == before, "a refused request created something"
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= WINDOW_S
    return retry


def limits(**kw: str) -> dict[str, str]:
    return {**LIMITS, **kw}


def quota_server(backend: str | None, **kw: str) -> contextlib.AbstractAsyncContextManager[RunningServer]:
    return running_server(cluster_locations=LOCATIONS, mongodb_url=backend, env=limits(**kw))


async def test_active_workflows(backend: str | None) -> None:
    async with quota_server(backend, EWMS_USER_MAX_ACTIVE_WORKFLOWS="2") as srv:
        made = [await call(srv, "alice", "/v1/workflows", workflow_body()) for _ in range(2)]
        assert [r.code for r in made] == [200, 200]
        await refused(srv, "alice", "/v1/workflows", workflow_body(), "EWMS_USER_MAX_ACTIVE_WORKFLOWS")
        assert (await call(srv, "bob", "/v1/workflows", workflow_body())).code == 200  # another user
        for _ in range(3):  # admins are exempt
            assert (await call(srv, "root", "/v1/workflows", workflow_body(), role="admin")).code == 200
        # ending one frees its place
        wid = json.loads(made[0].body)["workflow"]["workflow_id"]
        assert (await call(srv, "alice", f"/v1/workflows/{wid}/actions/finished", {})).code == 200
        assert (await call(srv, "alice", "/v1/workflows", workflow_body())).code == 200


async def test_workflows_per_minute(backend: str | None) -> None:
    async with quota_server(backend, EWMS_USER_MAX_WORKFLOWS_PER_MIN="3") as srv:
        for _ in range(3):
            r = await call(srv, "alice", "/v1/workflows", workflow_body())
            wid = json.loads(r.body)["workflow"]["workflow_id"]
            await call(srv, "alice", f"/v1/workflows/{wid}/actions/abort", {})  # ending does not help
        retry = await refused(
            srv, "alice", "/v1/workflows", workflow_body(), "EWMS_USER_MAX_WORKFLOWS_PER_MIN"
        )
        assert retry >= WINDOW_S - 10  # the oldest of the three was made a moment ago
        assert (await call(srv, "bob", "/v1/workflows", workflow_body())).code == 200
        assert (await call(srv, "root", "/v1/workflows", workflow_body(), role="admin")).code == 200


async def test_taskforces_per_workflow(backend: str | None) -> None:
    async with quota_server(backend, EWMS_MAX_TASKFORCES_PER_WORKFLOW="3") as srv:
        body = workflow_body(locations=("local", "remote"))  # 2 taskforces
        created = json.loads((await call(srv, "alice", "/v1/workflows", body)).body)
        add = f"/v1/task-directives/{created['task_directives'][0]['task_id']}/actions/add-workers"
        assert (await call(srv, "alice", add, {"cluster_location": "local", "n_workers": 1})).code == 200
        await refused(
            srv,
            "alice",
            add,
            {"cluster_location": "local", "n_workers": 1},
            "EWMS_MAX_TASKFORCES_PER_WORKFLOW",
        )
        assert (
            await call(srv, "root", add, {"cluster_location": "local", "n_workers": 1}, role="admin")
        ).code == 200
        # bob's workflow is his own count
        theirs = json.loads((await call(srv, "bob", "/v1/workflows", body)).body)
        bob_add = f"/v1/task-directives/{theirs['task_directives'][0]['task_id']}/actions/add-workers"
        assert (await call(srv, "bob", bob_add, {"cluster_location": "local", "n_workers": 1})).code == 200
        # a create that could never fit is a 400 naming the limit (no wait helps)
        big = workflow_body(n_tasks=2, locations=("local", "remote"))
        before = await counts(srv)
        r = await call(srv, "alice", "/v1/workflows", big)
        assert r.code == 400 and "EWMS_MAX_TASKFORCES_PER_WORKFLOW=3" in json.loads(r.body)["error"]
        assert await counts(srv) == before


async def test_add_workers_per_minute(backend: str | None) -> None:
    async with quota_server(backend, EWMS_USER_MAX_ADD_WORKERS_PER_MIN="2") as srv:
        created = json.loads((await call(srv, "alice", "/v1/workflows", workflow_body(n_tasks=2))).body)
        adds = [
            f"/v1/task-directives/{td['task_id']}/actions/add-workers" for td in created["task_directives"]
        ]
        body = {"cluster_location": "local", "n_workers": 1}
        assert (await call(srv, "alice", adds[0], body)).code == 200
        assert (await call(srv, "alice", adds[1], body)).code == 200  # per user, across tasks
        await refused(srv, "alice", adds[0], body, "EWMS_USER_MAX_ADD_WORKERS_PER_MIN")
        for _ in range(3):
            assert (await call(srv, "root", adds[0], body, role="admin")).code == 200
        theirs = json.loads((await call(srv, "bob", "/v1/workflows", workflow_body())).body)
        bob_add = f"/v1/task-directives/{theirs['task_directives'][0]['task_id']}/actions/add-workers"
        assert (await call(srv, "bob", bob_add, body)).code == 200


async def test_a_concurrent_burst_is_held_to_the_limit(backend: str | None) -> None:
    async with quota_server(backend, EWMS_USER_MAX_ACTIVE_WORKFLOWS="3") as srv:
        got = await asyncio.gather(*(call(srv, "alice", "/v1/workflows", workflow_body()) for _ in range(12)))
        assert sorted(r.code for r in got) == [200] * 3 + [429] * 9
        assert await srv.deps.store.count("workflows", {"owner": "alice"}) == 3


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    """Two server processes' worth of state (each its own quota locks) on one SQLite file."""
    with tempfile.TemporaryDirectory(prefix="ewms-") as data:
        env = limits(
            EWMS_USER_MAX_ACTIVE_WORKFLOWS="3", EWMS_USER_MAX_ADD_WORKERS_PER_MIN="2", EWMS_DATA_DIR=data
        )
        async with (
            running_server(cluster_locations=LOCATIONS, env=env) as a,
            running_server(cluster_locations=LOCATIONS, env=env) as b,
        ):
            yield a, b


async def test_replicas_count_in_the_shared_store(replicas: tuple[RunningServer, RunningServer]) -> None:
    a, b = replicas
    codes = [(await call(srv, "alice", "/v1/workflows", workflow_body())).code for srv in (a, b, a, b, a)]
    assert codes == [200, 200, 200, 429, 429]
    td = (await a.deps.store.get("task_directives", {"owner": "alice"}))["task_id"]
    add, body = f"/v1/task-directives/{td}/actions/add-workers", {"cluster_location": "local", "n_workers": 1}
    codes = [(await call(srv, "alice", add, body)).code for srv in (b, a, b)]
    assert codes == [200, 200, 429]
    # a burst split over both: each replica admits at most one more than the store allows
    wid = json.loads((await call(a, "alice", "/v1/query/workflows", {})).body)["workflows"][0]["workflow_id"]
    await call(a, "alice", f"/v1/workflows/{wid}/actions/abort", {})
    burst = await asyncio.gather(
        *(call(srv, "alice", "/v1/workflows", workflow_body()) for srv in (a, b) * 6)
    )
    admitted = sum(r.code == 200 for r in burst)
    assert 1 <= admitted <= 2, [r.code for r in burst]  # the limit's one free place, + (replicas - 1)


def test_retry_after_is_when_the_oldest_counted_call_leaves_the_minute() -> None:
    now = 1000.0
    assert _retry_after([990.0, 995.0, 999.0], 3, now) == 50  # the oldest leaves at 1050
    assert _retry_after([941.0, 990.0, 995.0, 999.0], 3, now) == 50  # 941 has to go, then 990
    assert _retry_after([940.5], 1, now) == 1  # never less than a second


def test_settings_documented_and_checked() -> None:
    text = settings_help()
    for name in SETTING_NAMES:
        assert name in text
    q = Config.from_env({}).quotas
    assert (q.max_active_workflows, q.max_workflows_per_min, q.max_taskforces_per_workflow) == (100, 30, 1000)
    assert q.max_add_workers_per_min == 60
    for bad in ("-1", "many", "1.5"):
        with pytest.raises(ConfigError, match="EWMS_USER_MAX_ADD_WORKERS_PER_MIN"):
            Config.from_env({"EWMS_USER_MAX_ADD_WORKERS_PER_MIN": bad})


async def test_defaults_hold_a_flood(backend: str | None) -> None:
    """With the default settings a user cannot make more than 30 workflows in a minute."""
    async with running_server(cluster_locations=LOCATIONS, mongodb_url=backend) as srv:
        codes = await asyncio.gather(
            *(call(srv, "alice", "/v1/workflows", workflow_body()) for _ in range(40))
        )
        assert sum(r.code == 200 for r in codes) == 30
