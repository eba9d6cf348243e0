"""An ended workflow is refused at once, naming its state; `ewms pull --n N` fails when fewer
than N messages arrive; a server without a broker is said, not waited for."""

from __future__ import annotations

import asyncio
import re

from rest_tools.client import RestClient

from ewms_server.testing import RunningServer, running_server

from .cli import EXAMPLES, cli_env, ewms, submit

WHEN = r"\(deactivated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\)"


async def queues_closed(srv: RunningServer, wf: str) -> None:
    rc = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
    try:
        for _ in range(300):
            profiles = (await rc.request("GET", f"/v1/workflows/{wf}/mq-profiles/public"))["mqprofiles"]
            if not any(p["is_activated"] for p in profiles):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the ended workflow's queues were not closed")
    finally:
        rc.close()


async def test_pushing_to_an_ended_workflow_is_refused_at_once(srv: RunningServer) -> None:
    env = cli_env(srv)
    for verb, state in (("abort", "ABORTED"), ("finish", "FINISHED")):
        wf = await submit(env, EXAMPLES / "square.json")
        code, _out, err = await ewms(env, "push", wf, "-", stdin=b"1")  # queues made, then ended
        assert code == 0, err
        code, out, err = await ewms(env, verb, wf)
        assert code == 0, err
        # --wait 600 and a 60 s limit on the command: it must not wait for anything
        code, out, err = await ewms(env, "push", wf, "--wait", "600", "-", stdin=b"2", timeout=60)
        assert code == 1 and out == ""
        assert re.fullmatch(
            f"ewms: error: workflow {wf} is {state} {WHEN}: it takes no more messages; submit a new workflow\n",
            err,
        ), err


async def test_pulling_from_closed_queues_is_refused_at_once(srv: RunningServer) -> None:
    env = cli_env(srv)
    wf = await submit(env, EXAMPLES / "square.json")
    code, _out, err = await ewms(env, "abort", wf)
    assert code == 0, err
    await queues_closed(srv, wf)
    for extra in ([], ["--dead-letter"]):
        code, out, err = await ewms(env, "pull", wf, "--out", "-", "--wait", "600", *extra, timeout=60)
        assert code == 1 and out == ""
        assert re.fullmatch(
            f"ewms: error: workflow {wf} is ABORTED {WHEN} and its queues are closed: "
            "there is nothing left to pull\n",
            err,
        ), err


async def test_ending_twice_keeps_the_first_end(srv: RunningServer) -> None:
    env = cli_env(srv)
    wf = await submit(env, EXAMPLES / "square.json")
    code, out, err = await ewms(env, "abort", wf)
    assert code == 0 and out.startswith(f"aborted {wf}: "), err
    code, out, err = await ewms(env, "finish", wf)
    assert code == 0, err
    assert re.fullmatch(f"{wf} was already ABORTED {WHEN}; nothing changed\n", out), out


async def test_pull_n_fails_when_fewer_arrive(srv: RunningServer) -> None:
    env = cli_env(srv)
    wf = await submit(env, EXAMPLES / "square.json")
    code, _out, err = await ewms(env, "push", wf, "--queue", "squares", "--lines", "-", stdin=b"one\ntwo\n")
    assert code == 0, err
    code, out, err = await ewms(env, "pull", wf, "--out", "-", "--n", "3", "--timeout", "1")
    assert code == 1
    assert sorted(out.split()) == ["one", "two"]  # what did arrive is still written
    assert err == (
        "ewms: error: only 2 of the 3 message(s) asked for arrived (1 s passed without one); "
        f"failed tasks, or no pilot running? see `ewms status {wf}`\n"
    )
    code, _out, err = await ewms(env, "push", wf, "--queue", "squares", "-", stdin=b"three")
    assert code == 0, err
    code, out, err = await ewms(env, "pull", wf, "--out", "-", "--n", "1", "--timeout", "5")
    assert code == 0 and out == "three\n" and err == "pulled 1 message(s) from squares\n", err


async def test_a_server_without_a_broker_is_said_at_once() -> None:
    async with running_server(
        cluster_locations={"local": "s"}, env={"EWMS_LOOP_INTERVAL_S": "0.2"}
    ) as srv:  # no EWMS_BROKER_URL
        env = cli_env(srv)
        wf = await submit(env, EXAMPLES / "square.json")
        code, _out, err = await ewms(env, "push", wf, "--wait", "600", "-", stdin=b"1", timeout=60)
        assert code == 1
        assert err == (
            "ewms: error: queue 'numbers' names no message broker: the EWMS server runs without "
            "one (its EWMS_BROKER_URL is unset), so nothing can be pushed or pulled\n"
        )
