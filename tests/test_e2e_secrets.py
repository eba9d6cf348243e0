"""A user's secret, end to end, every part real, and the grep that proves where it went.

The server in-process (SQLite in a known EWMS_DATA_DIR, the RabbitMQ adapter on the local
broker, every log at DEBUG into a file), `ewms secret set` reading the value from stdin,
``ewms-tms`` with the local backend (isolated job uids when run as root) running the real
``ewms-pilot``, whose task (resources/examples/tasks/secret_digest.py) writes the SHA-256 of
``$EWMS_SECRET_SECRET_X`` into its result: delivery is proven by the digest, so the value itself
has no business anywhere. After the run, the value is looked for in every log (server, TMS,
pilots' stdout/stderr), every answer of the server and of the CLI, every file under the TMS's
job directories and the server's data directory (read while the jobs run and again after), the
temp files written meanwhile, and the pilots' environments and command lines: none has it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.testing import running_server
from tests.client.cli import cli_env, ewms
from tests.processes import stop_process
from tests.test_e2e_workflow import (
    BROKER_URL,
    SCHEDD,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    poll,
    start_tms,
    supervisor_pids,
)
from tests.tms.isolation import ISOLATED, JOB_PYTHON, job_root, readable

N_MESSAGES = 3
TEST_BUDGET_S = 90
TEMP_FILE_MAX_BYTES = 20 * 1024 * 1024


def workflow_request() -> dict[str, Any]:
    script = readable("resources/examples/tasks/secret_digest.py")
    return {
        "tasks": [
            {
                "cluster_locations": ["local"],
                "task_image": JOB_PYTHON if ISOLATED else sys.executable,
                "task_args": f"-S {script} SECRET_X",
                "secrets": ["SECRET_X"],
                "input_queue_aliases": ["in"],
                "output_queue_aliases": ["out"],
                "n_workers": 1,
                "pilot_config": {
                    "environment": {
                        "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "300",  # only the finish stops it
                        "EWMS_PILOT_CHIRP_INTERVAL": "0.5",
                        "EWMS_PILOT_STOP_GRACE": "2",
                        "EWMS_PILOT_LOG_LEVEL": "DEBUG",
                    }
                },
                "worker_config": {
                    "do_transfer_worker_stdouterr": True,  # the pilot's logs, kept to be searched
                    "max_worker_runtime": 600,
                    "n_cores": 1,
                    "worker_disk": "1G",
                    "worker_memory": "2G",
                },
            }
        ],
        "public_queue_aliases": ["in", "out"],
    }


def files_under(*roots: Path, since: float | None = None, max_bytes: int | None = None) -> Iterator[Path]:
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not path.is_file() or path.is_symlink():
                    continue
                if since is not None and st.st_mtime < since:
                    continue
                if max_bytes is not None and st.st_size > max_bytes:
                    continue
                yield path


def holding(needle: bytes, paths: Iterator[Path]) -> list[str]:
    found = []
    for path in paths:
        try:
            if needle in path.read_bytes():
                found.append(str(path))
        except OSError:
            continue  # gone meanwhile (a task's temp dir)
    return found


def processes_holding(needle: bytes, pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        for part in ("environ", "cmdline"):
            try:
                if needle in Path(f"/proc/{pid}/{part}").read_bytes():
                    found.append(f"{pid}/{part}")
            except OSError:
                continue
    return found


async def test_a_secret_reaches_the_task_and_nothing_else(tmp_path: Path) -> None:
    started = time.time() - 1
    value = f"s3cr3t-{secrets.token_hex(20)}"
    needle = value.encode()
    digest = hashlib.sha256(needle).hexdigest()
    root = Path(job_root(tmp_path.name))
    jobs, data = root / "jobs", tmp_path / "data"
    tms_log, server_log = tmp_path / "tms.log", tmp_path / "server.log"
    answers: list[str] = []  # every answer of the server and the CLI, as text
    tms = None
    wf_id, uuids = "", set[str]()
    fetch_token = ""

    handler = logging.FileHandler(server_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    try:
        async with running_server(
            cluster_locations={"local": SCHEDD},
            broker_env={"EWMS_BROKER_URL": BROKER_URL},
            env={
                "EWMS_LOOP_INTERVAL_S": "0.5",
                "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
                "EWMS_DATA_DIR": str(data),
                "EWMS_LOG_LEVEL": "DEBUG",
            },
        ) as srv:
            client = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
            plain = client.request

            def recorded(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
                out = plain(method, path, body)
                answers.append(json.dumps(out))
                return out

            client.request = recorded  # type: ignore[method-assign]

            async def call(fn: Any, *args: Any, **kw: Any) -> Any:
                return await asyncio.to_thread(fn, *args, **kw)

            def raw(method: str, path: str, token: str) -> requests.Response:
                r = requests.request(
                    method, srv.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
                )
                answers.append(f"{r.status_code} {dict(r.headers)} {r.text}")
                return r

            try:
                async with asyncio.timeout(TEST_BUDGET_S):
                    # the CLI sets it from stdin, lists it, and never prints it
                    env = cli_env(srv)
                    for args, stdin in (
                        (("secret", "set", "SECRET_X"), (value + "\n").encode()),
                        (("secret", "list"), None),
                    ):
                        code, out, err = await ewms(env, *args, stdin=stdin)
                        answers.extend([out, err])
                        assert code == 0, err
                    assert "SECRET_X" in answers[-2]

                    created = await call(client.submit, workflow_request())
                    wf_id = created["workflow"]["workflow_id"]
                    uuids = {tf["taskforce_uuid"] for tf in created["taskforces"]}
                    assert created["task_directives"][0]["secrets"] == ["SECRET_X"]
                    tms = start_tms(srv, jobs, tms_log)

                    push_q = await call(client.pick_queue, wf_id, "in", "push", 30)
                    pull_q = await call(client.pick_queue, wf_id, "out", "pull", 30)
                    sent = await call(queues.push, push_q, (f"m{i}".encode() for i in range(N_MESSAGES)))
                    assert sent == N_MESSAGES
                    results: list[bytes] = []
                    got = await call(queues.pull, pull_q, results.append, n=N_MESSAGES, timeout=45)
                    assert got == N_MESSAGES
                    parsed = [json.loads(r) for r in results]
                    # delivered: the task saw the value (its digest), as EWMS_SECRET_SECRET_X only
                    assert sorted(p["input"] for p in parsed) == [f"m{i}" for i in range(N_MESSAGES)]
                    assert {p["sha256"] for p in parsed} == {digest}
                    assert all(p["secret_vars"] == ["EWMS_SECRET_SECRET_X"] for p in parsed)
                    assert not any(p["sees_auth_file"] for p in parsed)
                    answers.extend(r.decode() for r in results)

                    # while the pilot runs: its processes, its auth file, every file of the jobs
                    pids = await call(job_processes, uuids)
                    assert pids, "no pilot process found"
                    assert not processes_holding(needle, pids), "a pilot process holds the value"
                    auths = list(jobs.glob("*/pilot-queue-auth.json"))
                    assert len(auths) == 1
                    fetch = json.loads(auths[0].read_text())["ewms_secrets"]
                    fetch_token = fetch["token"]
                    assert fetch["url"] == f"{srv.url}/v1/pilot/secrets"
                    assert holding(fetch_token.encode(), iter(auths)) == [str(auths[0])]  # the grep reads it
                    assert not holding(needle, files_under(jobs)), "a job file holds the value"
                    tfs = await call(client.taskforces, wf_id)
                    assert tfs and tfs[0]["submit_dict"]["environment"]  # searched with every answer

                    # the end: pilots gone, and the fetch token revoked
                    await call(client.finish, wf_id)
                    await poll(
                        lambda: call(
                            lambda: all(tf["phase"] == "condor-complete" for tf in client.taskforces(wf_id))
                        ),
                        "condor-complete",
                        30,
                    )
                    await poll(
                        lambda: call(lambda: not job_processes(uuids) and not supervisor_pids(jobs)),
                        "the pilots to be gone",
                        15,
                    )
                    r = await call(raw, "GET", "/v1/pilot/secrets", fetch_token)
                    assert r.status_code == 403, r.text
                    # the server's own answers about it: names only
                    for path in (
                        "/v1/secrets",
                        f"/v1/workflows/{wf_id}",
                        f"/v1/taskforces/{sorted(uuids)[0]}",
                    ):
                        r = await call(raw, "GET", path, srv.token(role="user", sub="alice"))
                        assert r.status_code == 200, r.text
                    assert "SECRET_X" in answers[-3]
            finally:
                if tms is not None:
                    stop_process(tms)
                kill_pids(supervisor_pids(jobs))
                kill_pids(job_processes(uuids))
                client._rc.close()
                if wf_id:
                    await asyncio.to_thread(delete_broker_leftovers, wf_id)
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(level)
        handler.close()

    # THE grep: nowhere but in the task's own environment
    logs = {"server": server_log.read_text(errors="replace"), "tms": tms_log.read_text(errors="replace")}
    assert "PUT /v1/secrets/SECRET_X 200 by user:alice" in logs["server"]  # the logs were captured
    assert "fetched the task's secrets: SECRET_X" in "".join(
        p.read_text(errors="replace") for p in files_under(jobs) if p.suffix in (".out", ".err")
    )  # the pilot's log is among the files searched
    assert "submitted taskforce" in logs["tms"]
    for name, text in logs.items():
        assert value not in text, f"the value is in the {name} log"
    assert not [a for a in answers if value in a], "the value is in an answer"
    assert any(digest in a for a in answers)  # the answers searched include the results
    assert not holding(needle, files_under(jobs)), "a file of the TMS or its jobs holds the value"
    assert list(files_under(data)), "no data file to search"
    assert not holding(needle, files_under(data)), "the store holds the value in clear"
    temp = Path(tempfile.gettempdir())
    written = [
        p
        for p in files_under(temp, since=started, max_bytes=TEMP_FILE_MAX_BYTES)
        if not p.is_relative_to(tmp_path)
    ]
    assert not holding(needle, iter(written)), "a temp file holds the value"
    assert fetch_token and fetch_token not in logs["server"] and fetch_token not in logs["tms"]
