"""`ewms pull --dead-letter`: the messages tasks kept failing on, read from the broker's
`<mqid>.dead-letter` queues with the workflow's own credentials."""

from __future__ import annotations

from pathlib import Path

from ewms_server.testing import RunningServer

from .cli import EXAMPLES, cli_env, ewms, run_pilot, submit, submit_json


async def test_a_message_tasks_keep_failing_on_is_pulled_from_the_dead_letters(
    srv: RunningServer, tmp_path: Path
) -> None:
    env = cli_env(srv)
    wf = await submit(env, EXAMPLES / "square.json")
    code, _out, err = await ewms(env, "push", wf, "--lines", "-", stdin=b"3\nnot a number\n")
    assert code == 0, err

    # square.py exits 3 on "not a number": the pilot returns it until the broker's delivery
    # limit (3) dead-letters it; "3" goes through
    code, _out, err = await run_pilot(srv, wf, tmp_path, "numbers", "squares")
    assert code == 0, err
    assert err.count("task failed with exit code 3") >= 1, err

    code, out, err = await ewms(env, "pull", wf, "--out", "-", "--n", "1", "--timeout", "5")
    assert code == 0 and out == "9\n", err

    code, out, err = await ewms(env, "pull", wf, "--dead-letter", "--out", "-", "--n", "1", "--timeout", "5")
    assert code == 0, err
    assert out == "not a number\n"
    assert err == "pulled 1 dead-lettered message(s) from numbers\n"

    # pulled means acked: the dead-letter queue is empty now
    code, out, err = await ewms(env, "pull", wf, "--dead-letter", "--out", "-", "--n", "1", "--timeout", "1")
    assert code == 1 and out == ""
    assert err.startswith("ewms: error: only 0 of the 1 dead-lettered message(s) asked for arrived")


async def test_dead_letters_of_a_private_queue_by_its_id(srv: RunningServer) -> None:
    env = cli_env(srv)
    created = await submit_json(env, EXAMPLES / "square-twice-chained.json")
    wf = created["workflow"]["workflow_id"]
    first, second = created["task_directives"]
    private = first["output_queues"][0]
    assert second["input_queues"] == [private]

    code, _out, err = await ewms(env, "pull", wf, "--dead-letter", "--queue", "nope", "--out", "-")
    assert code == 1
    assert err == (
        f"ewms: error: no queue 'nope' in workflow {wf} (its queues: numbers, {private}, fourth-powers)\n"
    )
    # by default: every queue a task reads, the private one too (both empty here)
    code, out, err = await ewms(env, "pull", wf, "--dead-letter", "--out", "-", "--timeout", "0.5")
    assert code == 0 and out == "", err
    assert err == (
        f"pulled 0 dead-lettered message(s) from numbers\npulled 0 dead-lettered message(s) from {private}\n"
    )
    code, out, err = await ewms(
        env, "pull", wf, "--dead-letter", "--queue", private, "--out", "-", "--timeout", "0.5"
    )
    assert code == 0 and err == f"pulled 0 dead-lettered message(s) from {private}\n", err
