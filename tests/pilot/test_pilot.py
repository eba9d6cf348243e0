"""The pilot end to end, as a subprocess with the contract's environment, on the real broker."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from tests.conftest import wait_until_sync

from .conftest import ECHO, SQUARE, Workflow


def test_tasks_flow_through_and_are_reported(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    workflow.publish(q_in, [str(i).encode() for i in range(10)])

    assert workflow.run_pilot(EWMS_PILOT_MAX_CONCURRENT_TASKS="3") == 0

    assert sorted(workflow.drain(q_out)) == sorted(f"{i * i}\n".encode() for i in range(10))
    assert workflow.drain(q_in) == []
    statuses = workflow.statuses()
    assert statuses[0] == "Started" and statuses[-1] == "Done"
    assert "Tasking" in statuses
    assert workflow.last("TasksSuccess") == "10" and workflow.last("TasksFailed") == "0"
    assert workflow.last("TasksTotal") == "10"
    assert int(workflow.last("StartedTimestamp") or 0) <= time.time()


def test_two_chained_tasks(workflow_factory) -> None:  # type: ignore[no-untyped-def]
    w: Workflow = workflow_factory(n_queues=3)
    q_in, q_mid, q_out = w.q
    w.publish(q_in, [b"2", b"3"])
    first = w.start_pilot(
        EWMS_PILOT_QUEUE_INCOMING=q_in,
        EWMS_PILOT_QUEUE_OUTGOING=q_mid,
        EWMS_PILOT_CHIRP_FILE=str(w.tmp / "a.log"),
    )
    second = w.start_pilot(
        EWMS_PILOT_QUEUE_INCOMING=q_mid,
        EWMS_PILOT_QUEUE_OUTGOING=q_out,
        EWMS_PILOT_CHIRP_FILE=str(w.tmp / "b.log"),
    )
    assert first.wait(30) == 0 and second.wait(30) == 0
    assert sorted(w.drain(q_out)) == [b"16\n", b"81\n"]


def test_a_crashing_task_is_retried_then_dead_lettered(workflow_factory) -> None:  # type: ignore
    w: Workflow = workflow_factory(delivery_limit=1)
    q_in, q_out = w.q
    w.publish(q_in, [b"3", b"not-a-number", b"4"])

    assert w.run_pilot() == 0  # a failing task is not a pilot failure

    assert sorted(w.drain(q_out)) == [b"16\n", b"9\n"]
    assert w.drain(f"{q_in}.dead-letter") == [b"not-a-number"]  # after 1 + 1 attempts
    assert w.drain(q_in) == []
    assert w.last("TasksFailed") == "2" and w.last("TasksSuccess") == "2"
    assert w.last("Error") == "task exit code 3: not a number: 'not-a-number'"
    assert w.statuses()[-1] == "Done"


def test_a_task_past_its_timeout_is_killed_and_failed(workflow_factory) -> None:  # type: ignore
    w: Workflow = workflow_factory(delivery_limit=0)
    q_in, q_out = w.q
    w.publish(q_in, [b"slow"])
    start = time.monotonic()
    assert (
        w.run_pilot(
            EWMS_PILOT_TASK_ARGS=ECHO,
            EWMS_PILOT_TASK_TIMEOUT="0.5",
            EWMS_PILOT_TASK_ENV_JSON=json.dumps({"TEST_SLEEP": "20"}),
        )
        == 0
    )
    assert time.monotonic() - start < 10
    assert w.last("Error") == "task timed out after 0.5 s"
    assert w.drain(f"{q_in}.dead-letter") == [b"slow"] and w.drain(q_out) == []


def test_a_pilot_killed_mid_task_loses_nothing(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    pids = workflow.tmp / "pids"
    pids.mkdir()
    workflow.publish(q_in, [b"precious"])
    doomed = workflow.start_pilot(
        EWMS_PILOT_TASK_ARGS=ECHO,
        EWMS_PILOT_TASK_ENV_JSON=json.dumps({"TEST_SLEEP": "30", "TEST_PID_DIR": str(pids)}),
    )
    wait_until_sync(lambda: any(pids.iterdir()), 15)
    doomed.kill()  # SIGKILL: no chance to return the message
    doomed.wait()

    assert workflow.run_pilot(EWMS_PILOT_TASK_ARGS=ECHO) == 0
    assert workflow.drain(q_out) == [b"precious"]
    assert workflow.drain(q_in) == [] and workflow.drain(f"{q_in}.dead-letter") == []


def test_sigterm_returns_unfinished_messages(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    pids = workflow.tmp / "pids"
    pids.mkdir()
    workflow.publish(q_in, [b"a", b"b", b"c"])
    pilot = workflow.start_pilot(
        EWMS_PILOT_TASK_ARGS=ECHO,
        EWMS_PILOT_PREFETCH="3",
        EWMS_PILOT_STOP_GRACE="0.5",
        EWMS_PILOT_TASK_ENV_JSON=json.dumps({"TEST_SLEEP": "30", "TEST_PID_DIR": str(pids)}),
    )
    wait_until_sync(lambda: any(pids.iterdir()), 15)
    pilot.send_signal(signal.SIGTERM)
    assert pilot.wait(10) == 0

    assert "PendingRemainingTasks" in workflow.statuses()
    assert workflow.statuses()[-1] == "Done"
    assert workflow.drain(q_out) == []
    assert sorted(workflow.drain(q_in)) == [b"a", b"b", b"c"]  # all back, none lost
    for pid_file in pids.iterdir():  # the killed task did not outlive the pilot
        assert not Path(f"/proc/{pid_file.name}").exists()


def test_sigterm_lets_a_task_within_the_grace_finish(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    pids = workflow.tmp / "pids"
    pids.mkdir()
    workflow.publish(q_in, [b"a", b"b"])
    pilot = workflow.start_pilot(
        EWMS_PILOT_TASK_ARGS=ECHO,
        EWMS_PILOT_PREFETCH="2",
        EWMS_PILOT_STOP_GRACE="20",
        EWMS_PILOT_TASK_ENV_JSON=json.dumps({"TEST_SLEEP": "1", "TEST_PID_DIR": str(pids)}),
    )
    wait_until_sync(lambda: any(pids.iterdir()), 15)
    pilot.send_signal(signal.SIGTERM)
    assert pilot.wait(15) == 0
    done, back = workflow.drain(q_out), workflow.drain(q_in)
    assert len(done) == 1 and sorted(done + back) == [b"a", b"b"]


def test_idle_pilot_stops_after_the_first_message_timeout(workflow: Workflow) -> None:
    start = time.monotonic()
    assert workflow.run_pilot(EWMS_PILOT_TIMEOUT_QUEUE_WAIT_FOR_FIRST_MESSAGE="1") == 0
    assert 1 <= time.monotonic() - start < 10
    assert workflow.statuses()[-1] == "Done" and "Tasking" not in workflow.statuses()
    assert workflow.last("TasksTotal") == "0"


def test_init_command_runs_once_before_tasks(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    marker = workflow.tmp / "init-ran"
    workflow.publish(q_in, [b"5", b"6"])
    code = workflow.run_pilot(
        EWMS_PILOT_INIT_IMAGE=sys.executable,
        EWMS_PILOT_INIT_ARGS='-c \'import os; open(os.environ["MARK"], "a").write("x")\'',
        EWMS_PILOT_INIT_ENV_JSON=json.dumps({"MARK": str(marker)}),
    )
    assert code == 0
    assert marker.read_text() == "x"
    assert sorted(workflow.drain(q_out)) == [b"25\n", b"36\n"]


def test_a_failing_init_command_is_fatal_and_consumes_nothing(workflow: Workflow) -> None:
    q_in, _ = workflow.q
    workflow.publish(q_in, [b"5"])
    assert workflow.run_pilot(EWMS_PILOT_INIT_IMAGE="/bin/false") == 1
    assert workflow.statuses()[-1] == "FatalError"
    assert (workflow.last("Error") or "").startswith("init command failed: task exit code 1")
    assert workflow.drain(q_in) == [b"5"]


def test_a_readable_auth_file_is_refused(workflow: Workflow) -> None:
    os.chmod(workflow.auth_file, 0o644)
    assert workflow.run_pilot() == 2
    assert "must be accessible by its owner only" in workflow.stderr()
    assert workflow.statuses() == ["FatalError"]


def test_revoked_credentials_end_the_pilot_with_a_fatal_error(workflow: Workflow) -> None:
    import asyncio

    from .conftest import _call

    pilot = workflow.start_pilot(
        EWMS_PILOT_TIMEOUT_QUEUE_INCOMING="60", EWMS_PILOT_BROKER_RECONNECT_TIMEOUT="5"
    )
    wait_until_sync(lambda: "AwaitingFirstMessage" in workflow.statuses() or pilot.poll() is not None, 15)

    def consuming() -> bool:
        ch = workflow.channel()
        try:
            return ch.queue_declare(workflow.q[0], passive=True).method.consumer_count > 0
        finally:
            ch.connection.close()

    wait_until_sync(consuming, 15, 0.1, what="the pilot consuming its queue")
    asyncio.run(_call(3, "deactivate_workflow", workflow.workflow_id, workflow.q))
    assert pilot.wait(20) == 1
    assert workflow.statuses()[-1] == "FatalError"
    assert "refused" in (workflow.last("Error") or "")


def test_secrets_are_never_logged(workflow: Workflow) -> None:
    q_in, _ = workflow.q
    workflow.publish(q_in, [b"1", b"oops"])
    assert workflow.run_pilot(log_level="DEBUG") == 0
    token = workflow.access[q_in].auth_token
    assert token
    for f in workflow.tmp.iterdir():
        if f.is_file() and f.name != "auth.json":
            assert token not in f.read_text(errors="replace"), f.name
    assert "DEBUG" in workflow.stderr()  # the check above did read debug logs


def test_help_lists_every_setting() -> None:
    import re
    import subprocess

    from ewms_pilot.config import SETTINGS_DOCS

    out = subprocess.run(
        [sys.executable, "-m", "ewms_pilot", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(SQUARE).parents[3],
    ).stdout
    documented = {name for name, _d, _m in SETTINGS_DOCS}
    for name in documented:
        assert name in out, name
    source = "".join(p.read_text() for p in Path(SQUARE).parents[3].glob("ewms_pilot/*.py"))
    read = set(re.findall(r'"((?:EWMS_PILOT|EWMS_TASKFORCE|EWMS_WORKFLOW)_[A-Z_]+)"', source))
    assert read - {"EWMS_PILOT_LOG_LEVEL"} <= documented


def test_pika_logs_only_at_debug(workflow: Workflow) -> None:
    workflow.publish(workflow.q[0], [b"2"])
    assert workflow.run_pilot(log_level="INFO") == 0
    assert workflow.run_pilot(log_level="DEBUG") == 0  # the queue is empty: it idles out
    info, debug = workflow.stderr(0), workflow.stderr(1)
    assert " INFO ewms_pilot" in info and " pika." not in info
    assert " pika." in debug
