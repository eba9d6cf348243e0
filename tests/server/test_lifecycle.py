"""A taskforce's whole life over HTTP, and the ways a workflow can end around HTCondor."""

from __future__ import annotations

import asyncio

from rest_tools.client import RestClient

from ewms_server.storage.base import Change
from ewms_server.testing import RunningServer
from tests.conftest import SCHEDD, workflow_body
from tests.server.helpers import (
    create,
    error_of,
    loop_passes,
    now,
    phase_of,
    submit,
    take_starter,
    wait_phase,
)


async def test_full_life(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body())
    wf = made["workflow"]
    assert wf["deactivated"] is None and wf["priority"] == 50 and wf["owner"] == "alice"
    (td,) = made["task_directives"]
    (tf,) = made["taskforces"]
    assert tf["phase"] == "pre-mq-activation" and tf["schedd"] == SCHEDD
    assert tf["pilot_config"] == {
        "tag": "latest",
        "image_source": "cvmfs",
        "environment": {},
        "input_files": [],
    }
    assert tf["worker_config"]["condor_requirements"] == ""

    offered = await take_starter(tms)
    assert offered["taskforce"]["taskforce_uuid"] == tf["taskforce_uuid"]
    assert offered["task_directive"]["task_id"] == td["task_id"]
    assert {p["mqid"] for p in offered["mqprofiles"]} == {*td["input_queues"], *td["output_queues"]}
    assert all(p["is_activated"] and p["broker_type"] is None for p in offered["mqprofiles"])
    # leased: not offered again to a second poller
    assert await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD}) == {}

    uuid = tf["taskforce_uuid"]
    await submit(tms, uuid, cluster_id=7)
    got = await user.request("GET", f"/v1/taskforces/{uuid}")
    assert (got["phase"], got["cluster_id"], got["job_event_log_fpath"]) == (
        "condor-submit",
        7,
        "/var/log/ewms/tf.log",
    )

    statuses = {"IDLE": {"null": 1}, "HELD: memory. exceeded": {"Tasking": 1}}
    res = await tms.request(
        "POST",
        "/v1/tms/statuses/taskforces",
        {
            "compound_statuses_by_taskforce": {uuid: statuses},
            "top_task_errors_by_taskforce": {uuid: {"ValueError: x.y": 3}},
        },
    )
    assert res == {"results": [{"uuid": uuid, "status": "updated"}]}
    got = await user.request("GET", f"/v1/taskforces/{uuid}")
    assert got["compound_statuses"] == statuses and got["top_task_errors"] == {"ValueError: x.y": 3}

    done = await user.request("POST", f"/v1/workflows/{wf['workflow_id']}/actions/finished")
    assert done == {"workflow_id": wf["workflow_id"], "n_taskforces": 1}
    assert (await user.request("GET", f"/v1/workflows/{wf['workflow_id']}"))["deactivated"] == "FINISHED"

    stop = await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD})
    assert stop["taskforce_uuid"] == uuid and stop["cluster_id"] == 7
    await tms.request("POST", f"/v1/tms/condor-rm/taskforces/{uuid}")
    assert await phase_of(user, uuid) == "condor-rm"
    ts = now()
    await tms.request("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {"condor_complete_ts": ts})
    got = await user.request("GET", f"/v1/taskforces/{uuid}")
    assert got["phase"] == "condor-complete" and got["condor_complete_ts"] == ts
    trail = [(e["target_phase"], e["was_successful"], e["source_entity"]) for e in got["phase_change_log"]]
    assert trail == [
        ("pre-mq-activation", True, "user:alice"),
        ("pre-launch", True, "server:mq-activation"),
        ("pending-starter", True, "server:launch-control"),
        ("condor-submit", True, "system-tms:tms-1"),
        ("pending-stopper", True, "user:alice"),
        ("condor-rm", True, "system-tms:tms-1"),
        ("condor-complete", True, "system-tms:tms-1"),
    ]


async def test_new_workflow_reaches_pending_starter_fast(user: RestClient, tms: RestClient) -> None:
    """Loops are woken by new work, not fixed sleeps (the loop interval here is 1 s)."""
    t0 = asyncio.get_running_loop().time()
    await create(user, workflow_body())
    await take_starter(tms, timeout=5)
    assert asyncio.get_running_loop().time() - t0 < 0.9


async def test_abort_before_htcondor_cancels_without_tms(
    server: RunningServer, user: RestClient, tms: RestClient
) -> None:
    made = await create(user, workflow_body(n_tasks=2))
    wid = made["workflow"]["workflow_id"]
    res = await user.request("POST", f"/v1/workflows/{wid}/actions/abort")
    assert res["n_taskforces"] == 2
    for tf in made["taskforces"]:
        await wait_phase(user, tf["taskforce_uuid"], "cancelled")
    await loop_passes(server.deps)  # give the loops a chance to (wrongly) move them on
    for tf in made["taskforces"]:
        assert await phase_of(user, tf["taskforce_uuid"]) == "cancelled"
    assert await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD}) == {}
    assert await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD}) == {}
    # repeating the abort is harmless
    again = await user.request("POST", f"/v1/workflows/{wid}/actions/abort")
    assert again["n_taskforces"] == 0


async def test_abort_while_tms_submits_keeps_the_cluster_to_remove(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    await take_starter(tms)
    await user.request("POST", f"/v1/workflows/{made['workflow']['workflow_id']}/actions/abort")
    assert await phase_of(user, uuid) == "cancelled"
    await submit(tms, uuid, cluster_id=55)  # the submit raced the abort: accepted, to be removed
    stop = await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD})
    assert stop["taskforce_uuid"] == uuid and stop["cluster_id"] == 55


async def test_abort_during_htcondor(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    await take_starter(tms)
    await submit(tms, uuid)
    await user.request("POST", f"/v1/workflows/{made['workflow']['workflow_id']}/actions/abort")
    assert await phase_of(user, uuid) == "pending-stopper"
    await tms.request("POST", f"/v1/tms/condor-rm/taskforces/{uuid}/failed", {"error": "schedd busy"})
    assert await phase_of(user, uuid) == "pending-stopper"
    await tms.request("POST", f"/v1/tms/condor-rm/taskforces/{uuid}")
    await tms.request("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {"condor_complete_ts": now()})
    tf = await user.request("GET", f"/v1/taskforces/{uuid}")
    assert tf["phase"] == "condor-complete"
    assert [e["context"] for e in tf["phase_change_log"] if not e["was_successful"]] == [
        "condor_rm failed: schedd busy"
    ]


async def test_finish_after_cluster_completed_on_its_own(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    await take_starter(tms)
    await submit(tms, uuid)
    await tms.request("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {"condor_complete_ts": now()})
    res = await user.request("POST", f"/v1/workflows/{made['workflow']['workflow_id']}/actions/finished")
    assert res["n_taskforces"] == 0
    assert await phase_of(user, uuid) == "condor-complete"
    assert await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD}) == {}


async def test_submit_from_wrong_phase_is_404_and_logged(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    await take_starter(tms)
    await submit(tms, uuid, cluster_id=1)
    await submit(tms, uuid, cluster_id=1)  # a retried report of the same submit is fine
    code, err = await error_of(submit(tms, uuid, cluster_id=2))
    assert code == 404 and "not pending-starter" in err["error"]
    tf = await user.request("GET", f"/v1/taskforces/{uuid}")
    assert tf["cluster_id"] == 1
    assert tf["phase_change_log"][-1]["was_successful"] is False
    code, err = await error_of(
        tms.request("POST", "/v1/tms/condor-rm/taskforces/TF-000000000000-0000-000000")
    )
    assert code == 404 and err == {"code": 404, "error": "no taskforce TF-000000000000-0000-000000"}


async def test_retries_exhausted_reach_submit_failed(
    server: RunningServer, user: RestClient, tms: RestClient
) -> None:
    made = await create(user, workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    cfg = server.deps.cfg
    assert (cfg.max_submit_attempts, cfg.submit_retry_delay_s) == (3, 10)  # the defaults this test relies on
    await take_starter(tms)
    await tms.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed", {"error": "no such image"})
    # not offered again before the retry delay
    assert await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD}) == {}
    await tms.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed")
    await tms.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed", {"error": "again"})
    tf = await user.request("GET", f"/v1/taskforces/{uuid}")
    failed = [e for e in tf["phase_change_log"] if not e["was_successful"]]
    assert tf["phase"] == "submit-failed" and len(failed) == 3
    assert "n_failed_submits" not in tf  # the server's bookkeeping, never shown
    assert [e["context"] for e in tf["phase_change_log"][-4:]] == [
        "submit failed (1/3): no such image",
        "submit failed (2/3): (no error given)",
        "submit failed (3/3): again",
        "gave up after 3 failed submits",
    ]
    # still visible, terminal, and not offered again
    found = await user.request("POST", "/v1/query/taskforces", {"query": {"phase": "submit-failed"}})
    assert [t["taskforce_uuid"] for t in found["taskforces"]] == [uuid]
    code, _ = await error_of(tms.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed"))
    assert code == 404


async def test_pending_starter_order_priority_then_failures_then_age(
    server: RunningServer, user: RestClient, tms: RestClient
) -> None:
    low = await create(user, workflow_body(priority=10))
    high = await create(user, workflow_body(priority=90))
    mid_a = await create(user, workflow_body(priority=50))
    mid_b = await create(user, workflow_body(priority=50))
    uuids = {
        n: m["taskforces"][0]["taskforce_uuid"]
        for n, m in (("low", low), ("high", high), ("mid_a", mid_a), ("mid_b", mid_b))
    }
    # make mid_a older-but-failed: it must come after mid_b
    for u in uuids.values():
        await wait_phase(user, u, "pending-starter")
    await server.deps.store.transition(
        "taskforces", {"taskforce_uuid": uuids["mid_a"]}, Change(set={"n_failed_submits": 1})
    )
    order = []
    for _ in range(4):
        got = await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD})
        order.append(got["taskforce"]["taskforce_uuid"])
    assert order == [uuids["high"], uuids["mid_b"], uuids["mid_a"], uuids["low"]]


async def test_two_locations_two_schedds(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body(locations=("local", "remote")))
    by_schedd = {tf["schedd"]: tf for tf in made["taskforces"]}
    assert set(by_schedd) == {SCHEDD, "remote-schedd"}
    assert by_schedd["remote-schedd"]["collector"] == "remote-cm"
    remote = await take_starter(tms, schedd="remote-schedd")
    assert remote["taskforce"]["taskforce_uuid"] == by_schedd["remote-schedd"]["taskforce_uuid"]


async def test_add_workers(user: RestClient, tms: RestClient) -> None:
    made = await create(user, workflow_body())
    td = made["task_directives"][0]
    await take_starter(tms)
    tf = await user.request(
        "POST",
        f"/v1/task-directives/{td['task_id']}/actions/add-workers",
        {"cluster_location": "remote", "n_workers": 5},
    )
    assert tf["n_workers"] == 5 and tf["schedd"] == "remote-schedd" and tf["phase"] == "pre-launch"
    assert tf["worker_config"] == made["taskforces"][0]["worker_config"]
    offered = await take_starter(tms, schedd="remote-schedd")
    assert offered["taskforce"]["taskforce_uuid"] == tf["taskforce_uuid"]

    code, err = await error_of(
        user.request(
            "POST",
            f"/v1/task-directives/{td['task_id']}/actions/add-workers",
            {"cluster_location": "mars", "n_workers": 1},
        )
    )
    assert code == 400 and "mars" in err["error"]

    await user.request("POST", f"/v1/workflows/{made['workflow']['workflow_id']}/actions/abort")
    code, err = await error_of(
        user.request(
            "POST",
            f"/v1/task-directives/{td['task_id']}/actions/add-workers",
            {"cluster_location": "local", "n_workers": 1},
        )
    )
    assert code == 422 and "deactivated" in err["error"]
    code, _ = await error_of(
        user.request(
            "POST",
            "/v1/task-directives/TK-nope/actions/add-workers",
            {"cluster_location": "local", "n_workers": 1},
        )
    )
    assert code == 404


async def test_statuses_207_body(server: RunningServer, user: RestClient) -> None:
    from tornado.httpclient import AsyncHTTPClient

    made = await create(user, workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    import json

    resp = await AsyncHTTPClient().fetch(
        f"{server.url}/v1/tms/statuses/taskforces",
        method="POST",
        raise_error=False,
        headers={"Authorization": f"Bearer {server.token(role='system-tms', sub='tms')}"},
        body=json.dumps(
            {"compound_statuses_by_taskforce": {uuid: {"RUNNING": {"Tasking": 1}}, "TF-missing": {}}}
        ),
    )
    assert resp.code == 207
    assert json.loads(resp.body) == {
        "results": [
            {"uuid": uuid, "status": "updated"},
            {"uuid": "TF-missing", "status": "failed", "error": "no such taskforce"},
        ]
    }
    # the found taskforce was updated all the same
    assert (await user.request("GET", f"/v1/taskforces/{uuid}"))["compound_statuses"] == {
        "RUNNING": {"Tasking": 1}
    }
