"""Issue 9, finding 1, end to end on the real broker: a task of user B searches the job
directories, every /proc/*/environ and /proc/*/cmdline for user A's queue credentials and
for the TMS token, and finds nothing -- while A's workflow completes with every result out
once.

The server runs in-process with the RabbitMQ adapter; ``ewms-tms`` (local backend, isolated:
the test process is root) is a subprocess whose jobs run the real pilot of this tree from
the venv of resources/pilot-venv.sh under uids of their own (tests/test_e2e_workflow.start_tms).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.testing import running_server
from tests.conftest import BROKER_URL, wait_until
from tests.processes import stop_process
from tests.test_e2e_workflow import (
    _all,
    delete_broker_leftovers,
    kill_pids,
    start_tms,
    supervisor_pids,
)

from .isolation import ISOLATED, JOB_PYTHON, job_root, readable

pytestmark = pytest.mark.skipif(not ISOLATED, reason="per-taskforce uids need root or CAP_SETUID")

SCHEDD = "isolation-schedd"
N_MESSAGES = 30
EVIL = readable("tests/tms/evil_task.py")


def task(args: str, inq: str, outq: str, n_workers: int) -> dict[str, Any]:
    return {
        "cluster_locations": ["local"],
        "task_image": JOB_PYTHON,
        "task_args": f"-S {args}",
        "input_queue_aliases": [inq],
        "output_queue_aliases": [outq],
        "pilot_config": {
            "environment": {
                "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "300",  # only the finish stops them
                "EWMS_PILOT_CHIRP_INTERVAL": "0.5",
                "EWMS_PILOT_STOP_GRACE": "2",
            }
        },
        "worker_config": {
            "do_transfer_worker_stdouterr": True,
            "max_worker_runtime": 600,
            "n_cores": 1,
            "worker_disk": "1G",
            "worker_memory": "2G",
        },
        "n_workers": n_workers,
    }


def auth_tokens(path: str) -> set[str]:
    with open(path) as f:
        return {e["auth_token"] for e in json.load(f).values()}


async def test_a_task_of_b_finds_nothing_of_a_nor_of_the_tms(tmp_path: Path) -> None:
    jobs = os.path.join(job_root(tmp_path.name), "jobs")
    tms: subprocess.Popen[bytes] | None = None
    clients: list[EWMSClient] = []
    made: list[tuple[str, list[str]]] = []
    uuids: set[str] = set()

    async with running_server(
        cluster_locations={"local": SCHEDD},
        broker_env={"EWMS_BROKER_URL": BROKER_URL},
        env={"EWMS_LOOP_INTERVAL_S": "0.5", "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0"},
    ) as srv:
        tms_token = srv.token(role="system-tms", sub="tms-isolation")
        alice = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
        bob = EWMSClient(srv.url, srv.token(role="user", sub="bob"))
        clients += [alice, bob]

        async def call(fn: Callable[..., Any], *args: Any) -> Any:
            return await asyncio.to_thread(fn, *args)

        async def running(c: EWMSClient, wf: str, n: int) -> list[dict[str, Any]] | None:
            return await _all(
                call(c.taskforces, wf),
                lambda tf: (
                    tf["phase"] == "condor-submit"
                    and sum(tf["compound_statuses"].get("RUNNING", {}).values()) == n
                ),
            )

        try:
            async with asyncio.timeout(150):
                wf_a = await call(
                    alice.submit,
                    {
                        "tasks": [
                            task(readable("resources/examples/tasks/square.py"), "numbers", "squares", 2)
                        ],
                        "public_queue_aliases": ["numbers", "squares"],
                    },
                )
                wf_b = await call(
                    bob.submit,
                    {
                        "tasks": [task(EVIL, "orders", "loot", 1)],
                        "public_queue_aliases": ["orders", "loot"],
                    },
                )
                for wf in (wf_a, wf_b):
                    mqids = sorted(
                        {q for d in wf["task_directives"] for q in d["input_queues"] + d["output_queues"]}
                    )
                    made.append((wf["workflow"]["workflow_id"], mqids))
                    uuids |= {tf["taskforce_uuid"] for tf in wf["taskforces"]}
                a_id, b_id = made[0][0], made[1][0]

                tms = start_tms(srv, Path(jobs), tmp_path / "tms.log", schedd=SCHEDD, token=tms_token)
                [tf_a] = await wait_until(
                    lambda: running(alice, a_id, 2), 60, 0.2, what="A's 2 pilots to run"
                )
                [tf_b] = await wait_until(lambda: running(bob, b_id, 1), 60, 0.2, what="B's pilot to run")

                # A's work goes on meanwhile
                numbers = await call(alice.pick_queue, a_id, "numbers", "push", 30)
                squares = await call(alice.pick_queue, a_id, "squares", "pull", 30)
                assert (
                    await call(queues.push, numbers, [str(n).encode() for n in range(N_MESSAGES)])
                    == N_MESSAGES
                )

                # what B can learn: A's job dir from a path like its own, A's taskforce id
                a_dir = os.path.dirname(tf_a["job_event_log_fpath"])
                b_dir = os.path.dirname(tf_b["job_event_log_fpath"])
                a_tokens = auth_tokens(os.path.join(a_dir, "pilot-queue-auth.json"))
                b_tokens = auth_tokens(os.path.join(b_dir, "pilot-queue-auth.json"))
                a_work = glob.glob(os.path.join(a_dir, "work.*"))
                assert a_tokens and b_tokens and a_work
                guesses = [
                    os.path.join(a_dir, "pilot-queue-auth.json"),
                    os.path.join(a_dir, "job-events.log"),
                    *a_work,
                    *glob.glob(os.path.join(a_dir, "chirp.*")),
                    *glob.glob(os.path.join(a_dir, "*.out")),
                    os.path.join(jobs, ".local-schedd", "clusters"),
                ]
                orders = await call(bob.pick_queue, b_id, "orders", "push", 30)
                loot_q = await call(bob.pick_queue, b_id, "loot", "pull", 30)
                order = {"jobs_root": jobs, "targets": [a_dir, b_dir], "guesses": guesses}
                assert await call(queues.push, orders, [json.dumps(order).encode()]) == 1
                got: list[bytes] = []
                assert await call(lambda: queues.pull(loot_q, got.append, n=1, timeout=60)) == 1
                loot = json.loads(got[0])

                # the search really ran: it read its own pilot's environment and credentials
                everything = json.dumps(loot)
                assert f"EWMS_TASKFORCE_UUID={tf_b['taskforce_uuid']}" in everything
                assert any(t in everything for t in b_tokens), (
                    "B's task could not even read its own auth file"
                )
                assert len(loot["cmdline"]) > 5 and len(loot["environ"]) >= 2
                # ...and found nothing of A's nor of the TMS
                for secret in [*a_tokens, tms_token, "EWMS_TMS_TOKEN"]:
                    assert secret not in everything
                assert loot["refused"][os.path.join(a_dir, "pilot-queue-auth.json")] == "PermissionError"
                for work in a_work:
                    assert loot["refused"][work + "/"] == "PermissionError"
                assert loot["refused"][jobs + "/"] == "PermissionError"  # the job root is not listable
                # it may signal only processes of its own uid
                owners = {pid: _owner(pid) for pid in loot["signalable"]}
                assert owners and set(owners.values()) <= {loot["uid"], None}, owners
                assert loot["uid"] != os.getuid()

                # A's workflow completes: every result out exactly once
                results: list[bytes] = []
                assert (
                    await call(lambda: queues.pull(squares, results.append, n=N_MESSAGES, timeout=60))
                    == N_MESSAGES
                )
                assert await call(lambda: queues.pull(squares, results.append, n=None, timeout=1.5)) == 0
                assert Counter(int(r) for r in results) == Counter(n * n for n in range(N_MESSAGES))

                for c, wf_id in ((alice, a_id), (bob, b_id)):
                    await call(c.finish, wf_id)
                for c, wf_id in ((alice, a_id), (bob, b_id)):
                    await wait_until(
                        lambda c=c, wf_id=wf_id: _all(
                            call(c.taskforces, wf_id), lambda tf: tf["phase"] == "condor-complete"
                        ),
                        40,
                        0.2,
                        what="condor-complete",
                    )
                assert tms.poll() is None, "the TMS died"
        finally:
            if tms is not None:
                stop_process(tms)
            kill_pids(supervisor_pids(Path(jobs)))
            for c in clients:
                c._rc.close()
            for wf_id, _ in made:
                await asyncio.to_thread(delete_broker_leftovers, wf_id)
    log_text = (tmp_path / "tms.log").read_text(errors="replace")
    assert tms_token not in log_text and "submitted taskforce" in log_text


def _owner(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None  # ended since
