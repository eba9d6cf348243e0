"""GET /v1/workflows/{id}/progress and the task counts behind it, on both stores (no broker
here: tests/server/test_progress_broker.py runs the broker side)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rest_tools.client import RestClient

from ewms_server.ops import progress_history as history
from ewms_server.testing import RunningServer
from tests.conftest import workflow_body
from tests.server.helpers import create, error_of, submit, take_starter


@pytest.fixture
def server_env() -> dict[str, str]:
    # every report is sampled; answers are not reused (each test decides on caching itself)
    return {"EWMS_PROGRESS_SAMPLE_S": "0", "EWMS_PROGRESS_CACHE_S": "0"}


async def report(tms: RestClient, **by_uuid: Any) -> dict[str, Any]:
    return await tms.request("POST", "/v1/tms/statuses/taskforces", by_uuid)


async def running_workflow(user: RestClient, tms: RestClient, n_tasks: int = 2) -> dict[str, Any]:
    """A workflow whose taskforces (one per task) are all submitted."""
    created = await create(user, workflow_body(n_tasks=n_tasks))
    for i, _ in enumerate(created["taskforces"]):
        offered = await take_starter(tms)
        await submit(tms, offered["taskforce"]["taskforce_uuid"], cluster_id=100 + i)
    return created


async def test_progress_sums_the_pilots_task_counts_per_task(
    user: RestClient, user_b: RestClient, admin: RestClient, tms: RestClient
) -> None:
    created = await running_workflow(user, tms)
    wid = created["workflow"]["workflow_id"]
    (tf1, tf2), (td1, td2) = created["taskforces"], created["task_directives"]
    u1, u2 = tf1["taskforce_uuid"], tf2["taskforce_uuid"]
    assert tf1["task_id"] == td1["task_id"]
    r = await report(
        tms,
        compound_statuses_by_taskforce={
            u1: {"RUNNING": {"Tasking": 2}, "COMPLETED": {"Done": 1}},
            u2: {"IDLE": {"None": 2}},
        },
        top_task_errors_by_taskforce={u1: {"boom": 3, "bang": 1}},
        task_counts_by_taskforce={u1: {"succeeded": 7, "failed": 3}, u2: {"succeeded": 0, "failed": 0}},
    )
    assert [x["status"] for x in r["results"]] == ["updated", "updated"]
    p = await user.request("GET", f"/v1/workflows/{wid}/progress")
    assert p["workflow_id"] == wid and p["deactivated"] is None
    assert p["tasks"][td1["task_id"]] == {
        "succeeded": 7,
        "failed": 3,
        "workers": {"Done": 1, "Tasking": 2},
        "top_errors": {"boom": 3, "bang": 1},
    }
    assert p["tasks"][td2["task_id"]] == {
        "succeeded": 0,
        "failed": 0,
        "workers": {"None": 2},
        "top_errors": {},
    }
    assert p["totals"] == {
        "succeeded": 7,
        "failed": 3,
        "pending": None,
        "in_flight": None,
        "dead_lettered": None,
    }
    # no broker here: every queue figure is null, and the answer says why
    assert set(p["queues"]) == {"q0", "q1", "q2"}
    assert p["queues"]["q0"]["is_public"] and not p["queues"]["q1"]["is_public"]
    assert all(q["pending"] is None and q["dead_lettered"] is None for q in p["queues"].values())
    assert "no broker" in p["broker_error"] and p["broker_ts"] is None and p["eta_s"] is None
    # the report was sampled into the history
    assert p["history"][-1][1:] == [7.0, 3.0]
    # the taskforce carries its counts
    tf = await user.request("GET", f"/v1/taskforces/{u1}")
    assert tf["task_counts"] == {"succeeded": 7, "failed": 3}
    # an admin sees it too; another user gets the 404 of a missing workflow
    assert (await admin.request("GET", f"/v1/workflows/{wid}/progress"))["totals"]["succeeded"] == 7
    code, body = await error_of(user_b.request("GET", f"/v1/workflows/{wid}/progress"))
    missing_code, missing = await error_of(
        user_b.request("GET", "/v1/workflows/WF-000000000000-0000-000000/progress")
    )
    assert code == missing_code == 404
    assert body["error"].replace(wid, "X") == missing["error"].replace("WF-000000000000-0000-000000", "X")


async def test_history_is_bounded_and_rate_follows_the_counts(
    server: RunningServer, user: RestClient, tms: RestClient
) -> None:
    created = await running_workflow(user, tms, n_tasks=1)
    wid = created["workflow"]["workflow_id"]
    uuid = created["taskforces"][0]["taskforce_uuid"]
    for n in range(1, 6):
        await report(tms, task_counts_by_taskforce={uuid: {"succeeded": n * 10, "failed": n}})
    await report(tms, task_counts_by_taskforce={uuid: {"succeeded": 50, "failed": 5}})  # no change: no sample
    doc = await server.deps.store.get("workflow_progress", {"workflow_id": wid})
    assert [s[1:] for s in doc["samples"]] == [[10.0 * n, float(n)] for n in range(1, 6)]
    assert [s[1:] for s in doc["task_samples"][created["task_directives"][0]["task_id"]]] == [
        [10.0 * n, float(n)] for n in range(1, 6)
    ]
    # bounded: a store with a shorter history keeps the newest samples
    await history.record(server.deps.store, [wid], doc["last_ts"] + 1, min_interval_s=0, max_len=3)
    doc = await server.deps.store.get("workflow_progress", {"workflow_id": wid})
    assert [s[1] for s in doc["samples"]] == [30.0, 40.0, 50.0]


def test_rate_and_eta() -> None:
    samples = [[0.0, 0.0, 0.0], [100.0, 100.0, 1.0], [200.0, 300.0, 2.0]]
    # over the last 100 s: 200 tasks from t=100 to t=200
    assert history.rate(samples, 200.0, 300, 100) == pytest.approx(2.0)
    # a window longer than the history: from the first sample
    assert history.rate(samples, 200.0, 300, 1000) == pytest.approx(1.5)
    # nothing done since: the rate falls as time passes
    assert history.rate(samples, 400.0, 300, 100) == pytest.approx(0.0)
    assert history.rate([], 10.0, 0, 100) is None
    assert history.rate([[9.5, 1.0, 0.0]], 10.0, 1, 100) is None  # under a second of history
    assert history.eta(100, 2.0) == 50.0
    assert history.eta(0, None) == 0.0
    assert history.eta(5, 0.0) is None and history.eta(None, 1.0) is None


async def test_answers_are_reused_and_concurrent_requests_share_one_computation(
    backend: str | None,
) -> None:
    from ewms_server.testing import running_server
    from tests.conftest import LOCATIONS

    async with running_server(
        cluster_locations=LOCATIONS, mongodb_url=backend, env={"EWMS_PROGRESS_CACHE_S": "300"}
    ) as srv:
        user = RestClient(srv.url, token=srv.token(role="user", sub="alice"), retries=0, timeout=30)
        tms = RestClient(srv.url, token=srv.token(role="system-tms", sub="tms-1"), retries=0, timeout=30)
        created = await running_workflow(user, tms, n_tasks=1)
        wid, uuid = created["workflow"]["workflow_id"], created["taskforces"][0]["taskforce_uuid"]
        cache = srv.deps.progress
        before = cache.n_computed
        answers = await asyncio.gather(
            *(user.request("GET", f"/v1/workflows/{wid}/progress") for _ in range(20))
        )
        assert cache.n_computed == before + 1
        assert all(a == answers[0] for a in answers)
        await report(tms, task_counts_by_taskforce={uuid: {"succeeded": 4, "failed": 0}})
        again = await user.request("GET", f"/v1/workflows/{wid}/progress")
        assert again == answers[0] and cache.n_computed == before + 1  # reused: still the old figures
        # a retry (nothing to retry without a broker) drops the reused answer
        assert await user.request("POST", f"/v1/workflows/{wid}/actions/retry-dead-letters") == {
            "requeued": 0
        }
        fresh = await user.request("GET", f"/v1/workflows/{wid}/progress")
        assert fresh["totals"]["succeeded"] == 4 and cache.n_computed == before + 2
        # bob's request neither sees it nor computes anything
        bob = RestClient(srv.url, token=srv.token(role="user", sub="bob"), retries=0, timeout=30)
        cache.forget(wid)
        assert (await error_of(bob.request("GET", f"/v1/workflows/{wid}/progress")))[0] == 404
        assert cache.n_computed == before + 2
        for c in (user, tms, bob):
            c.close()


async def test_bad_task_counts_and_diagnoses_are_refused_whole(user: RestClient, tms: RestClient) -> None:
    created = await running_workflow(user, tms, n_tasks=1)
    uuid = created["taskforces"][0]["taskforce_uuid"]
    for bad in (
        {"task_counts_by_taskforce": {uuid: {"succeeded": -1, "failed": 0}}},
        {"task_counts_by_taskforce": {uuid: {"succeeded": 1}}},
        {"task_counts_by_taskforce": {uuid: {"succeeded": 1, "failed": 0, "x": 1}}},
        {"diagnosis_by_taskforce": {uuid: {"ts": 1.0}}},
    ):
        code, _ = await error_of(report(tms, **bad))
        assert code == 400, bad
    tf = await user.request("GET", f"/v1/taskforces/{uuid}")
    assert tf["task_counts"] == {"succeeded": 0, "failed": 0} and tf["diagnosis"] is None


def test_backlog_per_task_for_launch_control() -> None:
    from ewms_server.broker.base import QueueDepth
    from ewms_server.ops.progress import Snapshot, backlogs

    snap = Snapshot(
        workflow={"workflow_id": "WF-1", "owner": "alice", "deactivated": None},
        mqprofiles=[
            {"mqid": q, "alias": q, "is_public": True, "is_activated": True} for q in ("in", "mid", "out")
        ],
        task_directives=[
            {"task_id": "TK-1", "input_queues": ["in"], "output_queues": ["mid"]},
            {"task_id": "TK-2", "input_queues": ["mid"], "output_queues": ["out"]},
        ],
        taskforces=[
            {
                "task_id": "TK-1",
                "compound_statuses": {"RUNNING": {"Tasking": 2}, "IDLE": {"None": 3}},
                "task_counts": {"succeeded": 300, "failed": 1},
            },
            {"task_id": "TK-1", "compound_statuses": {"RUNNING": {"Tasking": 2}}},
            {"task_id": "TK-2", "compound_statuses": {"IDLE": {"None": 1}}},
        ],
        history={"samples": [], "task_samples": {"TK-1": [[0.0, 0.0, 0.0], [100.0, 100.0, 0.0]]}},
    )
    depths = {"in": QueueDepth(50, 4, 1), "mid": QueueDepth(10, 0, 0), "out": QueueDepth(7, 0, 0)}
    got = backlogs(snap, depths, now=200.0, window_s=100.0)
    one, two = got["TK-1"], got["TK-2"]
    assert (one.pending, one.in_flight, one.running_workers) == (50, 4, 4)
    assert one.rate_per_s == pytest.approx(2.0) and one.rate_per_worker == pytest.approx(0.5)
    assert (two.pending, two.in_flight, two.running_workers) == (10, 0, 0)
    assert two.rate_per_s is None and two.rate_per_worker is None
    # without broker figures the backlog is unknown, the rate still known
    blind = backlogs(snap, None, now=200.0, window_s=100.0)["TK-1"]
    assert blind.pending is None and blind.in_flight is None and blind.rate_per_s == pytest.approx(2.0)
