"""EWMS's queue client (oms-mqclient) on our queues, with the profiles exactly as our server
serves them: it writes what `ewms pull` and our pilots read, and reads what they write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import mqclient as mq
from rest_tools.client import RestClient

from ewms_server.testing import RunningServer

from .cli import EXAMPLES, cli_env, ewms, run_pilot, submit


async def served_profiles(server: RunningServer, wf: str) -> dict[str, dict[str, Any]]:
    """The public profiles by alias, as GET /v1/workflows/{id}/mq-profiles/public serves them
    once the queues are activated."""
    rc = RestClient(server.url, server.token(role="user", sub="alice"), retries=0)
    for _ in range(200):
        profiles = (await rc.request("GET", f"/v1/workflows/{wf}/mq-profiles/public"))["mqprofiles"]
        if profiles and all(p["is_activated"] for p in profiles):
            return {p["alias"]: p for p in profiles}
        await asyncio.sleep(0.1)
    raise AssertionError("the queues were not activated")


def in_thread(work: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
    """oms-mqclient blocks inside its coroutines: give it its own loop, off the server's."""
    return asyncio.to_thread(lambda: asyncio.run(work()))  # type: ignore[arg-type]


def mq_queue(profile: dict[str, Any], timeout: int = 1) -> mq.Queue:
    return mq.Queue(
        profile["broker_type"],
        address=profile["broker_address"],
        name=profile["mqid"],
        auth_token=profile["auth_token"],
        timeout=timeout,
    )


async def mq_send(profile: dict[str, Any], items: list[Any]) -> None:
    async def send() -> None:
        async with mq_queue(profile).open_pub() as pub:
            for item in items:
                await pub.send(item)

    await in_thread(send)


async def mq_receive(profile: dict[str, Any], expect: int | None = None) -> list[Any]:
    """Every message's data until `expect` of them, or until the queue stays empty."""

    async def receive() -> list[Any]:
        got = []
        async with mq_queue(profile).open_sub() as sub:
            async for data in sub:  # acked as the loop goes on (the last one at the exit)
                got.append(data)
                if len(got) == expect:
                    break
        return got

    return await in_thread(receive)  # type: ignore[no-any-return]


async def test_mqclient_publishes_and_ewms_pull_prints_the_data(srv: RunningServer) -> None:
    env = cli_env(srv)
    wf = await submit(env, EXAMPLES / "square.json")
    numbers = (await served_profiles(srv, wf))["numbers"]
    assert "://" not in numbers["broker_address"]  # user@host:port/vhost, as mqclient parses it

    await mq_send(numbers, ["3", 4, {"x": [1, "ü"]}, "two\nlines"])

    code, out, err = await ewms(
        env, "pull", wf, "--queue", "numbers", "--out", "-", "--n", "4", "--timeout", "5"
    )
    assert code == 0, err
    assert out == '3\n4\n{"x": [1, "\\u00fc"]}\ntwo\nlines\n'  # data, not the wrapper


async def test_ewms_push_is_read_by_mqclient(srv: RunningServer) -> None:
    env = cli_env(srv)
    wf = await submit(env, EXAMPLES / "square.json")
    squares = (await served_profiles(srv, wf))["squares"]

    code, _out, err = await ewms(
        env, "push", wf, "--queue", "squares", "--lines", "-", stdin="1\nü ✓\n".encode()
    )
    assert code == 0, err

    assert await mq_receive(squares, expect=2) == ["1", "ü ✓"]
    assert await mq_receive(squares) == []


async def test_our_pilots_run_a_chain_on_mqclient_messages(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    request = json.loads((EXAMPLES / "square-twice-chained.json").read_text())
    request["public_queue_aliases"].append("squares")  # so that this test may play the TMS
    (tmp_path / "wf.json").write_text(json.dumps(request))
    wf = await submit(env, tmp_path / "wf.json", "--keep-paths")  # this test runs the pilots
    profiles = await served_profiles(srv, wf)

    await mq_send(profiles["numbers"], [2, "3", "4\n"])

    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    results = await asyncio.gather(
        run_pilot(srv, wf, tmp_path / "1", "numbers", "squares", EWMS_PILOT_TIMEOUT_QUEUE_INCOMING="2"),
        run_pilot(srv, wf, tmp_path / "2", "squares", "fourth-powers", EWMS_PILOT_TIMEOUT_QUEUE_INCOMING="2"),
    )
    assert [code for code, _out, _err in results] == [0, 0], [err for _c, _o, err in results]

    assert sorted(await mq_receive(profiles["fourth-powers"], expect=3)) == ["16\n", "256\n", "81\n"]
    assert await mq_receive(profiles["fourth-powers"]) == []  # each result once
