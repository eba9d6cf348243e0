"""`ewms list` (the caller's workflows, newest first, every page) and `ewms status WF` (one
screen: state, tasks, taskforces, workers by status, top errors)."""

from __future__ import annotations

import asyncio
import json
import re

from ewms_client.client import EWMSClient, QueueProfile
from ewms_client.views import SECTIONS, Snapshot, status_screen, workers
from ewms_server.testing import RunningServer

from .cli import EXAMPLES, cli_env, ewms, submit_json


async def test_list_shows_the_callers_workflows_newest_first(srv: RunningServer) -> None:
    env = cli_env(srv)
    request = json.loads((EXAMPLES / "square.json").read_text())
    alice = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
    bob = EWMSClient(srv.url, srv.token(role="user", sub="bob"))
    # set up through the library: the CLI under test is `ewms list`
    ids = [(await asyncio.to_thread(alice.submit, request))["workflow"]["workflow_id"] for _ in range(5)]
    await asyncio.to_thread(bob.submit, request)  # not alice's
    await asyncio.to_thread(alice.finish, ids[1])
    alice.close()
    bob.close()

    code, out, err = await ewms(env, "list")
    assert code == 0 and err == "", err
    header, *rows = out.splitlines()
    assert header.split() == ["WORKFLOW", "CREATED", "PRIORITY", "STATE"]
    assert [r.split()[0] for r in rows] == ids[::-1]
    by_id = {r.split()[0]: r for r in rows}
    assert by_id[ids[0]].endswith(" active") and re.search(r" 50  active$", by_id[ids[0]])
    assert re.search(r"  FINISHED, deactivated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", by_id[ids[1]])

    code, out, err = await ewms(env, "list", "--active", "--limit", "2")
    assert code == 0
    assert [r.split()[0] for r in out.splitlines()[1:]] == [ids[4], ids[3]]
    assert err == "(2 older not shown: --limit 0 shows all)\n"

    code, out, _err = await ewms(env, "list", "--json", "--limit", "0")
    assert [wf["workflow_id"] for wf in json.loads(out)] == ids[::-1]


async def test_status_shows_state_tasks_and_taskforces(srv: RunningServer) -> None:
    env = cli_env(srv)
    created = await submit_json(env, EXAMPLES / "square-twice-chained.json")
    wf = created["workflow"]["workflow_id"]
    private = created["task_directives"][0]["output_queues"][0]
    code, _out, err = await ewms(env, "push", wf, "-", stdin=b"1")  # waits until the queues are made
    assert code == 0, err

    code, out, err = await ewms(env, "status", wf)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"workflow {wf}: active"
    assert lines[2] == "  public queues: numbers, fourth-powers (open)"
    assert f"     reads numbers; writes {private} (private)" in lines
    assert f"     reads {private} (private); writes fourth-powers" in lines
    # no ewms-tms serves the schedd: the taskforces wait for one, and the screen says so
    waiting = [ln for ln in lines if "waiting for the ewms-tms of schedd client-tests-schedd" in ln]
    assert len(waiting) == 2, out
    assert lines.count("       workers: none reported yet") == 2

    code, _out, err = await ewms(env, "abort", wf)
    assert code == 0, err
    code, out, err = await ewms(env, "status", wf)
    assert code == 0, err
    assert re.match(rf"workflow {wf}: ABORTED, deactivated \d{{4}}-", out)
    assert out.count("       cancelled: over: the workflow ended before it reached HTCondor\n") == 2


def snapshot() -> Snapshot:
    tf = {
        "taskforce_uuid": "TF-1",
        "task_id": "TK-1",
        "cluster_location": "sub-2",
        "schedd": "ap2",
        "n_workers": 4,
        "phase": "condor-submit",
        "cluster_id": 17,
        "compound_statuses": {"RUNNING": {"Tasking": 2, "AwaitingFirstMessage": 1}, "HELD: memory": {"": 1}},
        "top_task_errors": {"task exit code 3: not a number": 5, "task timed out after 60 s": 1},
    }
    failed = {
        "taskforce_uuid": "TF-2",
        "task_id": "TK-1",
        "cluster_location": "local",
        "n_workers": 1,
        "phase": "submit-failed",
        "phase_change_log": [
            {"target_phase": "condor-submit", "was_successful": False, "context": "no such schedd"},
            {"target_phase": "submit-failed", "was_successful": True, "context": "3 attempts"},
        ],
        "timestamp": 2,
    }
    return Snapshot(
        workflow={"workflow_id": "WF-1", "timestamp": 0, "priority": 70, "deactivated": None},
        directives=[{"task_id": "TK-1", "task_image": "img", "task_args": "--x", "input_queues": ["Q1"]}],
        taskforces=[failed, tf],
        queues=[QueueProfile("Q1", "in", True, "t", "rabbitmq", "a")],
    )


def test_status_screen_sections() -> None:
    text = status_screen(snapshot())
    assert "  public queues: in (open)" in text
    assert "  1. TK-1: img --x\n     reads in; writes -" in text
    assert (
        "     taskforce TF-1 at sub-2, 4 worker(s)\n"
        "       condor-submit: submitted: HTCondor cluster 17\n"
        "       workers: HELD: memory 1, RUNNING 3 (AwaitingFirstMessage 1, Tasking 2)"
    ) in text
    assert "submit-failed: over: every submit attempt failed\n       last error: no such schedd" in text
    assert text.index("TF-1") < text.index("TF-2")  # oldest taskforce first
    assert (
        "top task errors (6 in all)\n      5 x task exit code 3: not a number\n      1 x task timed out"
        in text
    )
    assert "ewms pull WF-1 --dead-letter --out -" in text
    # a section is a function of the snapshot: one more is one more block
    assert status_screen(snapshot(), (*SECTIONS, lambda s: ["progress", "  42%"])).endswith(
        "\n\nprogress\n  42%"
    )


def test_workers_by_job_and_pilot_status() -> None:
    assert workers({}) == "none reported yet"
    assert workers({"IDLE": {"": 2}, "RUNNING": {"Done": 0, "Tasking": 1}}) == "IDLE 2, RUNNING 1 (Tasking 1)"
