"""EWMS's published pilot (ewms-pilot 1.0.5, unchanged, in its own Python 3.12 venv) on a
workflow's queues as our server makes them, with the job environment EWMS's TMS would give it.

The boundaries this machine lacks are stood in for thinly: `docker` runs the task command as a
local process (tests/pilot/docker_standin.py) and a chirp server takes the place of HTCondor's
starter. Everything else is real: our server and its RabbitMQ adapter, the broker, our client
pushing and pulling, EWMS's pilot and oms-mqclient.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import pytest
from rest_tools.client import RestClient

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_pilot.envelope import ENVELOPE, unwrap
from ewms_server.broker.rabbitmq import RabbitMQSettings, leftover_paths, vhost_for
from ewms_server.testing import RunningServer, running_server
from tms.jobstate import parse_chirp

from .conftest import BROKER_URL, REPO, SQUARE
from .published_pilot import ChirpServer, SetupError, docker_bin, ewms_job_environment, pilot_venv

SCHEDD = "published-pilot-schedd"
N_GOOD = 10
DELIVERY_LIMIT = 1  # the server's EWMS_BROKER_TASK_DELIVERY_LIMIT: the poison runs twice
POISON = "not-a-number"


@pytest.fixture(scope="session")
def published_pilot() -> Path:
    try:
        return pilot_venv()
    except SetupError as e:
        pytest.fail(f"cannot set up EWMS's published pilot: {e}")


def workflow_request(data_dir: Path) -> dict[str, Any]:
    return {
        "public_queue_aliases": ["numbers", "squares"],
        "tasks": [
            {
                "cluster_locations": ["local"],
                "task_image": sys.executable,  # the docker stand-in runs the "image" as a program
                "task_args": SQUARE,
                "input_queue_aliases": ["numbers"],
                "output_queue_aliases": ["squares"],
                "pilot_config": {
                    "environment": {
                        # EWMS's pilot counts empty polls, not seconds: 3 outlasts a poison's retry
                        "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "3",
                        "EWMS_PILOT_MAX_CONCURRENT_TASKS": "2",
                        # its default stops at the first failed task; a known-good site keeps on
                        "EWMS_PILOT_STOP_LISTENING_ON_TASK_ERROR": "False",
                        "EWMS_PILOT_DATA_DIR_PARENT_PATH_ON_HOST": str(data_dir),
                    }
                },
                "worker_config": {
                    "do_transfer_worker_stdouterr": True,
                    "max_worker_runtime": 3600,
                    "n_cores": 1,
                    "priority": 50,
                    "worker_disk": "1G",
                    "worker_memory": "512M",
                    "condor_requirements": "",
                },
                "n_workers": 1,
            }
        ],
    }


def dead_letters(workflow_id: str, mqid: str) -> list[bytes]:
    params = pika.URLParameters(BROKER_URL)
    params.virtual_host = vhost_for(workflow_id)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        got = []
        while (body := ch.basic_get(f"{mqid}.dead-letter", auto_ack=True)[2]) is not None:
            got.append(body)
        return got
    finally:
        conn.close()


async def test_ewms_published_pilot_runs_unchanged_on_our_queues(
    published_pilot: Path, tmp_path: Path
) -> None:
    job_dir, data_dir = tmp_path / "job", tmp_path / "host"
    job_dir.mkdir()
    data_dir.mkdir()
    env = {
        "EWMS_LOOP_INTERVAL_S": "0.2",
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
        "EWMS_BROKER_TASK_DELIVERY_LIMIT": str(DELIVERY_LIMIT),
    }
    wf = ""
    async with running_server(
        cluster_locations={"local": SCHEDD}, broker_env={"EWMS_BROKER_URL": BROKER_URL}, env=env
    ) as srv:
        client = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
        tms = RestClient(srv.url, srv.token(role="system-tms", sub="ewms-tms"), retries=0)
        chirp = ChirpServer(job_dir)
        try:
            created = await asyncio.to_thread(client.submit, workflow_request(data_dir))
            wf = created["workflow"]["workflow_id"]
            numbers = await asyncio.to_thread(client.pick_queue, wf, None, "push", 30)
            assert numbers.message_format == ENVELOPE
            sent = [str(i).encode() for i in range(N_GOOD)] + [POISON.encode()]
            assert await asyncio.to_thread(queues.push, numbers, sent) == N_GOOD + 1

            # EWMS's TMS takes the taskforce, its task and its queues' profiles from the server
            found: dict[str, Any] = {}
            deadline = time.monotonic() + 30
            while not found:
                assert time.monotonic() < deadline, "the taskforce was never pending-starter"
                found = await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD})
                await asyncio.sleep(0.2)
            pilot_env = {k: v for k, v in os.environ.items() if not k.startswith(("EWMS_", "PYTHON"))}
            pilot_env |= ewms_job_environment(found) | {
                "PATH": os.pathsep.join(
                    [str(docker_bin(tmp_path / "bin")), str(published_pilot.parent), pilot_env["PATH"]]
                ),
                "_CONDOR_SCRATCH_DIR": str(job_dir),
                "_CONDOR_CHIRP_CONFIG": str(chirp.config),
            }
            assert "://" not in pilot_env["EWMS_PILOT_QUEUE_INCOMING_BROKER_ADDRESS"]

            with open(job_dir / "pilot.out", "wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    str(published_pilot),
                    "-m",
                    "ewms_pilot",
                    env=pilot_env,
                    cwd=job_dir,
                    stdout=out,
                    stderr=out,
                )
                try:
                    code = await asyncio.wait_for(proc.wait(), 180)
                except TimeoutError:
                    proc.kill()
                    raise
            log = (job_dir / "pilot.out").read_text(errors="replace")
            assert "ewms_pilot" in log and str(REPO / "ewms_pilot") not in log  # theirs, not ours

            results: list[bytes] = []
            squares = await asyncio.to_thread(client.pick_queue, wf, None, "pull", 30)
            got = await asyncio.to_thread(queues.pull, squares, results.append, n=None, timeout=2)
            assert got == N_GOOD, log[-3000:]  # every result out exactly once
            assert Counter(results) == Counter(f"{i * i}\n".encode() for i in range(N_GOOD))
            dead = await asyncio.to_thread(dead_letters, wf, numbers.mqid)
            assert [unwrap(d, ENVELOPE) for d in dead] == [POISON.encode()], log[-3000:]

            chirps = [c for c in map(parse_chirp, chirp.lines) if c]  # read as our TMS reads them
            statuses = [v for a, v in chirps if a == "Status"]
            assert statuses[:2] == ["Started", "AwaitingFirstMessage"] and "Tasking" in statuses
            assert [v for a, v in chirps if a == "TasksSuccess"][-1] == str(N_GOOD)
            assert [v for a, v in chirps if a == "TasksFailed"][-1] == str(1 + DELIVERY_LIMIT)
            # a task failed, so the pilot ends as EWMS's pilot does: FatalError, non-zero exit
            assert statuses[-1] == "FatalError" and code != 0
        finally:
            chirp.close()
            if wf:
                await asyncio.to_thread(client.abort, wf)
                await _wait_queues_deleted(srv, wf)
            client._rc.close()


async def _wait_queues_deleted(srv: RunningServer, wf: str) -> None:
    deadline = time.monotonic() + 20
    # the server's own bookkeeping (no field of the API)
    while not (await srv.deps.store.get("workflows", {"workflow_id": wf}) or {}).get("queues_deleted"):
        if time.monotonic() > deadline:  # best effort, so that the shared broker stays clean
            await asyncio.to_thread(_delete_leftovers, wf)
            return
        await asyncio.sleep(0.2)


def _delete_leftovers(wf: str) -> None:
    import requests

    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": BROKER_URL})
    for path in leftover_paths(wf):
        requests.delete(s.management_url.rstrip("/") + "/api" + path, auth=s.admin_auth, timeout=5)
