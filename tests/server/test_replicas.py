"""Replicas on one machine: two `ewms-server` processes on one data directory behave as one
server. Requests alternate between them through a taskforce's whole life; claims sent to
both at once never hand one taskforce to two callers; both servers' background loops run
side by side (fast) and neither undoes a deactivation made through the other."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from ewms_pilot.broker import connection_url
from tests.conftest import BROKER_URL, broker_objects_gone, wait_until_sync, workflow_body
from tests.test_e2e_workflow import delete_broker_leftovers

from .server_process import Api, ServerProcess, free_port, token

LOCATIONS = {"life": "life-schedd", "race": "race-schedd", "ended": "ended-schedd"}


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {
        "EWMS_CLUSTER_LOCATIONS": json.dumps(LOCATIONS),
        "EWMS_LOOP_INTERVAL_S": "0.1",  # both servers' loops race each other all the time
        "EWMS_STARTER_LEASE_S": "600",
    }
    pair = [ServerProcess(tmp_path / "data", free_port(), tmp_path / f"server-{n}.log", env) for n in "ab"]
    for s in pair:
        s.start()
    try:
        yield pair[0], pair[1]
    finally:
        codes = [s.stop() for s in pair]
        logs = "".join(s.log.read_text() for s in pair)
        assert codes == [0, 0], logs[-3000:]
        assert "Traceback" not in logs and " ERROR " not in logs, logs[-3000:]


def body(location: str) -> dict[str, Any]:
    b = workflow_body(locations=(location,))
    b["tasks"][0]["n_workers"] = 1
    return b


def wait_phase(api: Api, uuid: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        tf: dict[str, Any] = api.ok("GET", f"/v1/taskforces/{uuid}")
        return tf if tf["phase"] == phase else None

    return wait_until_sync(reached, timeout, what=f"{uuid} to reach {phase}")  # type: ignore[no-any-return]


def test_one_taskforce_life_with_requests_alternating(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    ua, ub = Api(a.port, token("user")), Api(b.port, token("user"))
    schedds = [LOCATIONS["life"]]
    ta, tb = (
        Api(a.port, token("system-tms", "tms-a", schedds)),
        Api(b.port, token("system-tms", "tms-b", schedds)),
    )
    starter = f"/v1/tms/pending-starter/taskforces?schedd={LOCATIONS['life']}"
    stopper = f"/v1/tms/pending-stopper/taskforces?schedd={LOCATIONS['life']}"
    try:
        made = ua.ok("POST", "/v1/workflows", body("life"))  # create on A
        uuid, wid = made["taskforces"][0]["taskforce_uuid"], made["workflow"]["workflow_id"]
        wait_phase(ub, uuid, "pending-starter")  # seen from B
        assert tb.ok("GET", starter)["taskforce"]["taskforce_uuid"] == uuid  # claimed on B
        assert ta.ok("GET", starter) == {}  # A honours B's lease
        submit = {
            "cluster_id": 7,
            "n_workers": 1,
            "submit_dict": {"queue": 1},
            "job_event_log_fpath": "/j.log",
        }
        ta.ok("POST", f"/v1/tms/condor-submit/taskforces/{uuid}", submit)  # submitted on A
        status, _ = tb.call("POST", f"/v1/tms/condor-submit/taskforces/{uuid}", {**submit, "cluster_id": 8})
        assert status == 404  # no second cluster, whichever replica is asked
        report = {
            "compound_statuses_by_taskforce": {uuid: {"RUNNING": {"Tasking": 1}}},
            "top_task_errors_by_taskforce": {uuid: {"boom": 2}},
        }
        assert (
            tb.ok("POST", "/v1/tms/statuses/taskforces", report)["results"][0]["status"] == "updated"
        )  # on B
        tf = ua.ok("GET", f"/v1/taskforces/{uuid}")  # read on A
        assert tf["compound_statuses"] == {"RUNNING": {"Tasking": 1}} and tf["top_task_errors"] == {"boom": 2}
        ua.ok("POST", f"/v1/workflows/{wid}/actions/abort")  # abort on A
        wait_phase(ub, uuid, "pending-stopper")
        assert tb.ok("GET", stopper)["taskforce_uuid"] == uuid  # claimed on B
        assert ta.ok("GET", stopper) == {}
        ta.ok("POST", f"/v1/tms/condor-rm/taskforces/{uuid}", {})  # removed on A
        tb.ok("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {"condor_complete_ts": 1})  # gone, on B
        tf = wait_phase(ua, uuid, "condor-complete")
        assert ub.ok("GET", f"/v1/workflows/{wid}")["deactivated"] == "ABORTED"
    finally:
        for api in (ua, ub, ta, tb):
            api.close()
    done = [(e["target_phase"], e["source_entity"]) for e in tf["phase_change_log"] if e["was_successful"]]
    assert done == [  # each step once: both servers' loops ran, only one of them did each move
        ("pre-mq-activation", "user:alice"),
        ("pre-launch", "server:mq-activation"),
        ("pending-starter", "server:launch-control"),
        ("condor-submit", "system-tms:tms-a"),
        ("pending-stopper", "user:alice"),
        ("condor-rm", "system-tms:tms-a"),
        ("condor-complete", "system-tms:tms-b"),
    ], done


def test_claims_sent_to_both_never_share_a_taskforce(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    n = 40
    apis = [Api(s.port, token("user")) for s in replicas]
    try:
        uuids = [
            apis[i % 2].ok("POST", "/v1/workflows", body("race"))["taskforces"][0]["taskforce_uuid"]
            for i in range(n)
        ]
        for uuid in uuids:
            wait_phase(apis[0], uuid, "pending-starter")
    finally:
        for api in apis:
            api.close()
    got: list[str] = []
    lock = threading.Lock()

    def claimer(port: int, name: str) -> None:
        api = Api(port, token("system-tms", name, [LOCATIONS["race"]]))
        try:
            while offer := api.ok("GET", f"/v1/tms/pending-starter/taskforces?schedd={LOCATIONS['race']}"):
                with lock:
                    got.append(offer["taskforce"]["taskforce_uuid"])
        finally:
            api.close()

    threads = [
        threading.Thread(target=claimer, args=(s.port, f"tms-{i}")) for i in range(3) for s in replicas
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(got) == Counter(uuids)  # every one handed out, each exactly once


def test_a_deactivation_made_on_one_is_never_undone_by_the_others_loops(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    apis = [Api(s.port, token("user")) for s in replicas]
    made = []
    try:
        for i in range(20):  # abort on the other replica at once, while both loops move it along
            wf = apis[i % 2].ok("POST", "/v1/workflows", body("ended"))
            apis[(i + 1) % 2].ok("POST", f"/v1/workflows/{wf['workflow']['workflow_id']}/actions/abort")
            made.append(wf)
        aborted = time.time()
        for s in (a, b):  # let every loop of both servers make whole passes after the last abort
            health = Api(s.port, token())
            try:
                deadline = time.monotonic() + 30
                while not all(
                    (loop["last_pass_ts"] or 0) > aborted + 0.5
                    for loop in health.ok("GET", "/v1/health")["loops"].values()
                ):
                    assert time.monotonic() < deadline, "the loops made no pass"
                    time.sleep(0.1)
            finally:
                health.close()
        for wf in made:
            uuid = wf["taskforces"][0]["taskforce_uuid"]
            tf = apis[0].ok("GET", f"/v1/taskforces/{uuid}")
            assert tf["phase"] == "cancelled", tf["phase_change_log"]
            assert (
                apis[1].ok("GET", f"/v1/workflows/{wf['workflow']['workflow_id']}")["deactivated"]
                == "ABORTED"
            )
    finally:
        for api in apis:
            api.close()
    starter = Api(a.port, token("system-tms", "t", [LOCATIONS["ended"]]))
    try:
        assert starter.ok("GET", f"/v1/tms/pending-starter/taskforces?schedd={LOCATIONS['ended']}") == {}
    finally:
        starter.close()


def test_both_activate_queues_and_what_users_are_given_works(tmp_path: Path) -> None:
    """With RabbitMQ, both servers' queue activation loops race for each new workflow: the
    credentials a user and the pilots are given must be the broker's, whichever won; once the
    workflows end, their broker users and vhosts are gone."""
    env = {
        "EWMS_CLUSTER_LOCATIONS": json.dumps(LOCATIONS),
        "EWMS_LOOP_INTERVAL_S": "0.05",
        "EWMS_BROKER_URL": BROKER_URL,
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
        "EWMS_BROKER_REVOKE_MAX_WAIT_S": "0",
    }
    pair = [ServerProcess(tmp_path / "data", free_port(), tmp_path / f"server-{n}.log", env) for n in "ab"]
    for s in pair:
        s.start()
    apis = [Api(s.port, token("user")) for s in pair]
    wids: list[str] = []
    try:
        for i in range(6):
            made = apis[i % 2].ok("POST", "/v1/workflows", body("life"))
            wids.append(made["workflow"]["workflow_id"])
            wait_phase(apis[(i + 1) % 2], made["taskforces"][0]["taskforce_uuid"], "pending-starter")
        for i, wid in enumerate(wids):
            profiles = apis[i % 2].ok("GET", f"/v1/workflows/{wid}/mq-profiles/public")["mqprofiles"]
            for p in profiles:
                url = connection_url(p["broker_address"], p["auth_token"])
                pika.BlockingConnection(pika.URLParameters(url)).close()  # refused if out of date
        for i, wid in enumerate(wids):
            apis[i % 2].ok("POST", f"/v1/workflows/{wid}/actions/finished")
        deadline = time.monotonic() + 60
        while not all(broker_objects_gone(w) for w in wids):
            assert time.monotonic() < deadline, "broker users or vhosts left behind"
            time.sleep(0.2)
    finally:
        for api in apis:
            api.close()
        codes = [s.stop() for s in pair]
        for w in wids:
            delete_broker_leftovers(w)
    logs = "".join(s.log.read_text() for s in pair)
    assert codes == [0, 0] and "Traceback" not in logs, logs[-3000:]
