"""The whole system end to end, every part real.

- the server in-process (``ewms_server.testing.running_server``) with the RabbitMQ adapter on
  the local broker;
- ``ewms-tms`` as a subprocess with the ``local`` backend, each job running the real
  ``ewms-pilot``, which runs ``resources/examples/tasks/*.py`` with the ``process`` runner;
- the ``ewms_client`` library to submit, push, pull and finish.

Workflow ``resources/examples/square-then-add-one.json``: numbers -> square -> (private queue)
-> add one -> results; 2 pilots per task, 200 messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import requests

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.broker.rabbitmq import (
    RabbitMQSettings,
    dead_letter_queue,
    leftover_paths,
    vhost_for,
)
from ewms_server.testing import RunningServer, running_server
from tests.conftest import BROKER_URL, broker_objects_gone, wait_until
from tests.processes import stop_process
from tests.tms.isolation import ISOLATED, JOB_PYTHON, job_root, pilot_command, readable, uid_range

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "resources" / "examples"
SCHEDD = "e2e-schedd"
N_MESSAGES = 200
N_WORKERS = 2  # per task: 4 pilots in all
TEST_BUDGET_S = 85


def workflow_request() -> dict[str, Any]:
    """The example workflow, made runnable here: absolute task paths (as ``ewms submit``
    makes them; jobs run in their own directory), an interpreter any job uid can run, and
    pilots that stay up until the workflow is finished."""
    body = json.loads((EXAMPLES / "square-then-add-one.json").read_text())
    for task in body["tasks"]:
        task["cluster_locations"] = ["local"]
        task["task_image"] = JOB_PYTHON if ISOLATED else sys.executable
        # -S: the stdlib-only task scripts need no site packages, and start 4x faster
        task["task_args"] = f"-S {readable('resources/examples/' + task['task_args'])}"
        task["n_workers"] = N_WORKERS
        task["pilot_config"]["environment"].update(
            {
                "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "300",  # only the finish stops them
                "EWMS_PILOT_MAX_CONCURRENT_TASKS": "2",
                "EWMS_PILOT_CHIRP_INTERVAL": "0.5",
                "EWMS_PILOT_STOP_GRACE": "2",
            }
        )
        task["worker_config"]["worker_memory"] = "2G"
    return body


def start_tms(
    srv: RunningServer,
    jobs: Path,
    log: Path,
    *,
    schedd: str = SCHEDD,
    token: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Isolated when the test process can switch users (root here and in CI): each
    taskforce's jobs under a uid of their own, running this tree's pilot from a venv they can
    run; else every job as this user, said explicitly. `extra_env` comes last."""
    bin_dir = os.path.dirname(sys.executable)
    first, last = uid_range()
    local = (
        {
            "EWMS_TMS_LOCAL_JOB_COMMAND": pilot_command(),
            "EWMS_TMS_LOCAL_UID_RANGE": f"{first}-{last}",
        }
        if ISOLATED
        else {"EWMS_TMS_LOCAL_SINGLE_TENANT": "true"}
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),  # the real ewms-pilot
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "EWMS_TMS_SERVER_URL": srv.url,
        "EWMS_TMS_TOKEN": token or srv.token(role="system-tms", sub="tms-e2e"),
        "EWMS_TMS_SCHEDD": schedd,
        "EWMS_TMS_BACKEND": "local",
        "EWMS_TMS_JOB_EVENT_LOG_DIR": str(jobs),
        "EWMS_TMS_STARTER_INTERVAL": "0.1",
        "EWMS_TMS_STOPPER_INTERVAL": "0.2",
        "EWMS_TMS_WATCHER_INTERVAL": "0.2",
        "EWMS_TMS_TRACKER_INTERVAL": "1",
        "EWMS_TMS_LOG_LEVEL": "DEBUG",
        **local,
        **(extra_env or {}),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tms"], env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=REPO
        )


def job_processes(taskforce_uuids: set[str]) -> list[int]:
    """Pids of processes running for these taskforces (pilots and their tasks): the local
    backend gives each job EWMS_TASKFORCE_UUID in its environment, which its children inherit."""
    wanted = {f"EWMS_TASKFORCE_UUID={u}".encode() for u in taskforce_uuids}
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if not zombie and env & wanted:
            pids.append(int(entry.name))
    return pids


def supervisor_pids(jobs: Path) -> list[int]:
    pids = []
    for pid_file in (jobs / ".local-schedd" / "clusters").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if (
                Path(f"/proc/{pid}").exists()
                and b"local_supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ):
                pids.append(pid)
    return pids


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def world_readable_files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(path.lstat().st_mode) and path.lstat().st_mode & stat.S_IROTH:
                    yield path


def delete_broker_leftovers(workflow_id: str) -> None:
    """Best effort: the workflow's broker user and vhost (the server's finish + zero grace
    normally removed them already)."""
    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": BROKER_URL})
    api = s.management_url.rstrip("/") + "/api"
    with requests.Session() as session:
        session.auth = s.admin_auth
        for path in leftover_paths(workflow_id):
            with contextlib.suppress(requests.RequestException):
                session.delete(api + path, timeout=5)


def broker_queue_depths(workflow_id: str, mqids: list[str]) -> dict[str, int]:
    """Ready messages left in each queue and dead-letter queue (exact, unlike the management
    API's periodic statistics), seen by the admin in the workflow's vhost."""
    params = pika.URLParameters(BROKER_URL)
    params.virtual_host = vhost_for(workflow_id)
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        return {
            q: ch.queue_declare(q, passive=True).method.message_count
            for m in mqids
            for q in (m, dead_letter_queue(m))
        }
    finally:
        conn.close()


async def test_chained_workflow_200_messages_4_pilots(tmp_path: Path) -> None:
    jobs = Path(job_root(tmp_path.name)) / "jobs"
    tms_log = tmp_path / "tms.log"
    tms: subprocess.Popen[bytes] | None = None
    client: EWMSClient | None = None
    wf_id = ""
    mqids: list[str] = []
    uuids: set[str] = set()
    tokens: set[str] = set()
    seen_statuses: dict[str, list[dict[str, Any]]] = {}

    async with running_server(
        cluster_locations={"local": SCHEDD},
        broker_env={"EWMS_BROKER_URL": BROKER_URL},
        env={"EWMS_LOOP_INTERVAL_S": "0.5", "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0"},
    ) as srv:
        try:
            async with asyncio.timeout(TEST_BUDGET_S):
                client = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
                c = client

                async def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
                    # the client blocks; the server runs on this very loop
                    return await asyncio.to_thread(fn, *args, **kw)

                async def taskforces() -> list[dict[str, Any]]:
                    tfs = await call(c.taskforces, wf_id)
                    for tf in tfs:
                        if tf.get("compound_statuses"):
                            seen_statuses.setdefault(tf["taskforce_uuid"], []).append(tf["compound_statuses"])
                    return tfs  # type: ignore[no-any-return]

                created = await call(c.submit, workflow_request())
                wf_id = created["workflow"]["workflow_id"]
                uuids = {tf["taskforce_uuid"] for tf in created["taskforces"]}
                assert len(uuids) == 2
                directives = created["task_directives"]
                mqids = sorted({q for d in directives for q in d["input_queues"] + d["output_queues"]})
                assert len(mqids) == 3
                square, add_one = sorted(directives, key=lambda d: "add_one" in d["task_args"])
                assert square["output_queues"] == add_one["input_queues"]  # chained

                tms = start_tms(srv, jobs, tms_log)

                # push to the first public queue, pull from the last
                push_q = await call(c.pick_queue, wf_id, None, "push", 30)
                pull_q = await call(c.pick_queue, wf_id, None, "pull", 30)
                assert push_q.mqid == square["input_queues"][0]
                assert pull_q.mqid == add_one["output_queues"][0]
                numbers = list(range(N_MESSAGES))
                sent = await call(queues.push, push_q, (str(n).encode() for n in numbers))
                assert sent == N_MESSAGES

                results: list[bytes] = []
                got = await call(queues.pull, pull_q, results.append, n=N_MESSAGES, timeout=45)
                assert got == N_MESSAGES, f"only {got} result(s) came out"
                # nothing more: every message came out exactly once
                assert await call(queues.pull, pull_q, results.append, n=None, timeout=1.5) == 0
                assert Counter(int(r) for r in results) == Counter(n * n + 1 for n in numbers)
                assert await call(broker_queue_depths, wf_id, mqids) == {
                    q: 0 for m in mqids for q in (m, dead_letter_queue(m))
                }

                # all 4 pilots are up and the TMS watcher's statuses reached the server
                tfs = await wait_until(
                    lambda: _all(
                        taskforces(),
                        lambda tf: (
                            tf["phase"] == "condor-submit"
                            and sum(tf["compound_statuses"].get("RUNNING", {}).values()) == N_WORKERS
                        ),
                    ),
                    20,
                    0.2,
                    what="every taskforce running its 2 pilots",
                )
                assert all(tf["n_workers"] == N_WORKERS for tf in tfs)
                for auth in jobs.glob("*/pilot-queue-auth.json"):  # removed with its cluster
                    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
                    tokens |= {e["auth_token"] for e in json.loads(auth.read_text()).values()}
                assert len(job_processes(uuids)) >= 2 * N_WORKERS
                assert len(supervisor_pids(jobs)) == 2

                # finish: the pilots stop and every taskforce ends in condor-complete
                r = await call(c.finish, wf_id)
                assert r["n_taskforces"] == 2
                tfs = await wait_until(
                    lambda: _all(taskforces(), lambda tf: tf["phase"] == "condor-complete"),
                    30,
                    0.2,
                    what="condor-complete",
                )
                await wait_until(
                    lambda: asyncio.to_thread(lambda: not job_processes(uuids) and not supervisor_pids(jobs)),
                    15,
                    0.2,
                    what="the pilots to be gone",
                )
                assert tms.poll() is None, "the TMS died"
                for uuid in uuids:
                    assert seen_statuses.get(uuid), f"no compound_statuses seen for {uuid}"
                    assert any(s.get("RUNNING") for s in seen_statuses[uuid])
                for tf in tfs:  # removed pilots end cleanly: credentials outlive them
                    pilot_statuses = {p for by_pilot in tf["compound_statuses"].values() for p in by_pilot}
                    assert "FatalError" not in pilot_statuses, tf["compound_statuses"]
                wf = await call(c.workflow, wf_id)
                assert wf["deactivated"] == "FINISHED"
                # the broker user went with the workflow, and (zero delete grace) its vhost of queues
                await wait_until(
                    lambda: asyncio.to_thread(broker_objects_gone, wf_id),
                    15,
                    0.2,
                    what="the broker user and queues to be deleted",
                )
        finally:
            if tms is not None:
                stop_process(tms)
            kill_pids(supervisor_pids(jobs))
            kill_pids(job_processes(uuids))
            if client is not None:
                client._rc.close()
            if wf_id:
                await asyncio.to_thread(delete_broker_leftovers, wf_id)

    # no queue token in the TMS's output nor in any world-readable file it wrote
    assert tokens, "no queue-auth file found"
    log_text = tms_log.read_text(errors="replace")
    assert "submitted taskforce" in log_text
    readable = list(world_readable_files(jobs))  # none: the TMS and job uids keep theirs private
    for token in tokens:
        assert token not in log_text
        for path in readable:
            assert token not in path.read_text(errors="replace"), f"token in {path}"


async def _all(
    tfs_coro: Awaitable[list[dict[str, Any]]], cond: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]] | None:
    tfs = await tfs_coro
    return tfs if tfs and all(cond(tf) for tf in tfs) else None
