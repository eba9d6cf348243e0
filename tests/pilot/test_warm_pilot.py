"""The pilot with warm workers (EWMS_PILOT_TASK_MODE=warm), as a subprocess on the real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from ewms_client.paths import resolve
from ewms_server.schema import OpenAPI
from tests.conftest import wait_until_sync

from .conftest import REPO, Workflow
from .test_warm_runner import alive

HERE = Path(__file__).parent
WARM_TASK = str(HERE / "warm_task.py")
RAW_WORKER = str(HERE / "raw_worker.py")
EXAMPLE = REPO / "resources" / "examples" / "square-warm.json"


def dirs(w: Workflow) -> tuple[Path, Path, Path]:
    """pids/ (a file per started worker), busy/ (a file per held task), and the hold file."""
    pids, busy = w.tmp / "pids", w.tmp / "busy"
    pids.mkdir()
    busy.mkdir()
    return pids, busy, w.tmp / "hold"


def warm(script: str, pids: Path, busy: Path, hold: Path, **settings: str) -> dict[str, str]:
    env = {"TEST_PID_DIR": str(pids), "TEST_BUSY_DIR": str(busy), "TEST_HOLD": str(hold)}
    return {
        "EWMS_PILOT_TASK_MODE": "warm",
        "EWMS_PILOT_TASK_ARGS": script,
        "EWMS_PILOT_TASK_ENV_JSON": json.dumps(env),
        **settings,
    }


def held_worker(busy: Path) -> int:
    wait_until_sync(lambda: any(busy.iterdir()), 30, what="a task started")
    (marker,) = busy.iterdir()
    return int(marker.name.removeprefix("busy-"))


def start_held(
    w: Workflow, bodies: list[bytes], **settings: str
) -> tuple[subprocess.Popen[bytes], int, tuple[Path, Path, Path]]:
    """A warm pilot whose worker holds the first message: the pilot, that worker's pid, dirs()."""
    pids, busy, hold = dirs(w)
    hold.touch()
    w.publish(w.q[0], bodies)
    pilot = w.start_pilot(**warm(WARM_TASK, pids, busy, hold, **settings))
    return pilot, held_worker(busy), (pids, busy, hold)


def test_a_warm_worker_killed_mid_task_is_restarted_and_the_message_redelivered(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    pilot, victim, (pids, _busy, hold) = start_held(workflow, [b"precious"])
    os.kill(victim, signal.SIGKILL)
    hold.unlink()  # the redelivered message may run

    assert pilot.wait(30) == 0
    (result,) = workflow.drain(q_out)
    body, _, pid = result.partition(b" by ")
    assert body == b"precious" and int(pid) != victim
    assert sorted(int(p.name) for p in pids.iterdir()) == sorted([victim, int(pid)])  # restarted once
    assert workflow.drain(q_in) == [] and workflow.drain(f"{q_in}.dead-letter") == []
    assert workflow.last("TasksFailed") == "1" and workflow.last("TasksSuccess") == "1"
    assert workflow.last("Error") == (
        "warm worker died during the task (killed by SIGKILL): stderr: got b'precious'"
    )
    assert workflow.statuses()[-1] == "Done"


def test_a_pilot_killed_mid_task_loses_nothing_and_leaves_no_worker_behind(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    doomed, orphan, (pids, busy, hold) = start_held(workflow, [b"precious"])
    doomed.kill()  # SIGKILL: no chance to return the message or stop the worker
    doomed.wait()
    hold.unlink()
    wait_until_sync(
        lambda: not alive(orphan), 30, what="the orphan gone"
    )  # its task done, it finds the pilot gone

    assert workflow.run_pilot(**warm(WARM_TASK, pids, busy, hold)) == 0
    (result,) = workflow.drain(q_out)
    assert result.startswith(b"precious by ") and int(result.partition(b" by ")[2]) != orphan
    assert workflow.drain(q_in) == [] and workflow.drain(f"{q_in}.dead-letter") == []


def test_a_worker_writing_garbage_has_its_message_nacked_and_the_error_reported(workflow_factory) -> None:  # type: ignore
    w: Workflow = workflow_factory(delivery_limit=1)
    q_in, q_out = w.q
    pids, busy, hold = dirs(w)
    w.publish(q_in, [b"garbage", b"fine"])

    assert w.run_pilot(**warm(RAW_WORKER, pids, busy, hold)) == 0

    assert w.drain(q_out) == [b"fine"]
    assert w.drain(f"{q_in}.dead-letter") == [b"garbage"]  # nacked twice: 1 + 1 attempts
    assert w.drain(q_in) == []
    assert w.last("Error") == "warm worker broke the protocol: reply is not JSON: 'this is not json'"
    assert w.last("TasksFailed") == "2" and w.last("TasksSuccess") == "1"
    assert len(list(pids.iterdir())) >= 2  # the worker was replaced
    assert "replacing warm worker" in w.stderr()


def test_sigterm_during_a_warm_task_returns_every_message(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    pilot, worker, _ = start_held(
        workflow, [b"a", b"b", b"c"], EWMS_PILOT_PREFETCH="3", EWMS_PILOT_STOP_GRACE="0.5"
    )
    pilot.send_signal(signal.SIGTERM)
    assert pilot.wait(15) == 0

    assert "PendingRemainingTasks" in workflow.statuses() and workflow.statuses()[-1] == "Done"
    assert workflow.drain(q_out) == []
    assert sorted(workflow.drain(q_in)) == [b"a", b"b", b"c"]  # all back, none lost
    assert not alive(worker)  # killed after the grace, not orphaned
    assert workflow.last("TasksFailed") == "0"  # a stop is not a task failure


def test_several_warm_workers_give_every_result_exactly_once(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    pids, busy, hold = dirs(workflow)
    n = 200
    workflow.publish(q_in, [b"%d" % i for i in range(n)])

    assert workflow.run_pilot(**warm(WARM_TASK, pids, busy, hold, EWMS_PILOT_MAX_CONCURRENT_TASKS="4")) == 0

    results = workflow.drain(q_out)
    bodies = Counter(r.partition(b" by ")[0] for r in results)
    assert bodies == Counter(b"%d" % i for i in range(n))  # every one, exactly once
    served_by = {int(r.partition(b" by ")[2]) for r in results}
    started = {int(p.name) for p in pids.iterdir()}
    assert served_by == started and 2 <= len(started) <= 4  # one per slot, not one per message
    assert not any(alive(p) for p in started)  # the pilot ended them when it stopped
    assert workflow.drain(q_in) == []
    assert workflow.last("TasksSuccess") == str(n) and workflow.last("TasksTotal") == str(n)
    assert "Tasking" in workflow.statuses() and workflow.statuses()[-1] == "Done"


def test_the_example_warm_workflow_is_valid_and_runs(workflow: Workflow) -> None:
    body, _warnings = resolve(json.loads(EXAMPLE.read_text()), EXAMPLE.parent)  # as `ewms submit` does
    OpenAPI().check_body("/v1/workflows", "POST", body)  # what `ewms submit` sends
    (task,) = body["tasks"]
    q_in, q_out = workflow.q
    numbers = (REPO / "resources" / "examples" / "numbers.txt").read_bytes().split()
    workflow.publish(q_in, [*numbers, b"x"])
    code = workflow.run_pilot(
        **{
            **task["pilot_config"]["environment"],
            "EWMS_PILOT_TASK_IMAGE": sys.executable,  # the example's "python3", this one's packages
            "EWMS_PILOT_TASK_ARGS": task["task_args"],
            "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "1.5",
        }
    )
    assert code == 0
    assert sorted(workflow.drain(q_out)) == sorted(b"%d\n" % (int(n) ** 2) for n in numbers)
    assert workflow.last("Error") == "task failed: ValueError: invalid literal for int() with base 10: 'x'"
