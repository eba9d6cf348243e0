"""`ewms status`, `ewms watch` and `ewms retry` against the real server and broker."""

from __future__ import annotations

import asyncio
import time

import pika
from rest_tools.client import RestClient

from ewms_pilot.broker import connection_url
from ewms_server.testing import RunningServer

from .cli import EXAMPLES, cli_env, ewms

HELD = {
    "proc": 1,
    "reason": "Job has gone over cgroup memory limit",
    "code": 34,
    "subcode": 0,
    "since": 1.0,
    "n_released": 0,
    "next_action": "release",
    "next_action_ts": 61.0,
}


def reject(profile: dict, n: int) -> None:
    """As the workflow's user: take n messages and reject them (dead-lettered at once)."""
    url = connection_url(profile["broker_address"], profile["auth_token"])
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for _ in range(n):
            method, _, _ = ch.basic_get(profile["mqid"])
            assert method is not None
            ch.basic_reject(method.delivery_tag, requeue=False)
        ch.queue_declare(profile["mqid"], passive=True)  # a round trip: the rejects are in
    finally:
        conn.close()


async def test_status_watch_and_retry(srv: RunningServer) -> None:
    env = cli_env(srv)
    code, out, err = await ewms(env, "submit", str(EXAMPLES / "square.json"))
    assert code == 0, err
    wf = out.strip()
    code, _, err = await ewms(env, "push", wf, "--lines", str(EXAMPLES / "numbers.txt"))
    assert code == 0, err
    user = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
    tms = RestClient(srv.url, srv.token(role="system-tms", sub="tms-1"), retries=0)
    try:
        profiles = (await user.request("GET", f"/v1/workflows/{wf}/mq-profiles/public"))["mqprofiles"]
        numbers = next(p for p in profiles if p["alias"] == "numbers")
        await asyncio.to_thread(reject, numbers, 2)
        [tf] = (await user.request("POST", "/v1/query/taskforces", {"query": {"workflow_id": wf}}))[
            "taskforces"
        ]
        uuid = tf["taskforce_uuid"]
        diagnosis = {
            "ts": time.time(),
            "backend": "htcondor",
            "jobs": {"idle": 1, "running": 0, "held": 1, "ended": 0},
            "idle_reasons": {"no matching slot": 1},
            "held": [HELD],
            "n_evictions": 0,
            "matches": {"ever_matched": 0, "never_matched": 1},
            "slots": None,
            "error": None,
        }
        await tms.request(
            "POST",
            "/v1/tms/statuses/taskforces",
            {
                "compound_statuses_by_taskforce": {
                    uuid: {"IDLE": {"None": 1}, f"HELD: {HELD['reason']}": {"None": 1}}
                },
                "task_counts_by_taskforce": {uuid: {"succeeded": 0, "failed": 2}},
                "diagnosis_by_taskforce": {uuid: diagnosis},
            },
        )

        # the broker's statistics come every few seconds: ask until they are in
        deadline = time.monotonic() + 40
        while True:
            code, out, err = await ewms(env, "status", wf)
            assert code == 0, err
            if "2 dead-lettered, 3 pending" in out:
                break
            assert time.monotonic() < deadline, out
            await asyncio.sleep(1)
        assert out.startswith(f"workflow {wf}: active\n")
        assert "\n\nprogress [" in out  # the progress section, after the workflow's
        assert "0 done, 2 dead-lettered, 3 pending, 0 in flight (2 failed attempt(s))" in out
        assert f"`ewms retry {wf}`" in out
        assert "idle: 1 no matching slot" in out
        assert "held job 1: Job has gone over cgroup memory limit (code 34); to be released at" in out

        code, out, err = await ewms(env, "watch", wf, "--once")
        assert code == 0, err
        assert "dead-lettered" in out and "[" in out

        code, out, err = await ewms(env, "retry", wf)
        assert code == 0, err
        assert out.strip() == f"requeued 2 dead-lettered message(s) of {wf}"

        # another user: the server's 404, one line, exit 1
        for command in ("status", "retry"):
            code, out, err = await ewms(cli_env(srv, "bob"), command, wf)
            assert code == 1 and err.startswith("ewms: error: 404"), (command, err)
    finally:
        user.close()
        tms.close()
