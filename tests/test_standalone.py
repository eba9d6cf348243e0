"""`ewms-server standalone` as a user runs it (issue 10 B1, B6, B7, B10): a subprocess on a
terminal (a pty) with its log redirected to a file; the export line it shows drives the `ewms`
CLI through a small workflow; Ctrl-C (SIGINT) stops it all, leaving no broker objects of the
ended workflow and no TMS behind, and no token in the log."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from ewms_client.client import EWMSClient
from ewms_server import standalone
from tests.client.cli import ewms
from tests.conftest import broker_objects_gone, wait_until, wait_until_sync
from tests.processes import read_terminal, stop_process
from tests.test_e2e_workflow import delete_broker_leftovers, job_processes, kill_pids, supervisor_pids
from tests.tms.isolation import ISOLATED, JOB_PYTHON, job_root, pilot_command, readable, uid_range

REPO = Path(__file__).resolve().parents[1]
EXPORT = re.compile(r"^export EWMS_URL=(\S+) EWMS_TOKEN=(\S+)\s*$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def standalone_env(data: Path, jobs: Path, port: int, **extra: str) -> dict[str, str]:
    """What a user would set: where the data go, the port, and the local backend's job
    settings (isolated under uids of their own when the tests run as root)."""
    first, last = uid_range()
    local = (
        {"EWMS_TMS_LOCAL_JOB_COMMAND": pilot_command(), "EWMS_TMS_LOCAL_UID_RANGE": f"{first}-{last}"}
        if ISOLATED
        else {"EWMS_TMS_LOCAL_SINGLE_TENANT": "true"}
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "EWMS_DATA_DIR": str(data),
        "EWMS_REST_PORT": str(port),
        "EWMS_LOOP_INTERVAL_S": "0.5",
        "EWMS_TMS_JOB_EVENT_LOG_DIR": str(jobs),
        "EWMS_TMS_STARTER_INTERVAL": "0.1",
        "EWMS_TMS_STOPPER_INTERVAL": "0.2",
        "EWMS_TMS_WATCHER_INTERVAL": "0.2",
        **local,
        **extra,
    }


def start_standalone(
    env: dict[str, str], log: Path, stdout: int | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """`ewms-server standalone` with stderr into `log` (and stdout too, unless a terminal is given)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ewms_server", "standalone"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out if stdout is None else stdout,
            stderr=out,
            cwd=cwd,
        )


def run_standalone(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ewms-server standalone` that is expected to refuse to start: its exit and output."""
    return subprocess.run(
        [sys.executable, "-m", "ewms_server", "standalone"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def square_request(tmp: Path) -> Path:
    """resources/examples/square.json with an interpreter and a script any job uid can run."""
    body = json.loads((REPO / "resources" / "examples" / "square.json").read_text())
    for task in body["tasks"]:
        task["task_image"] = JOB_PYTHON if ISOLATED else sys.executable
        task["task_args"] = f"-S {readable('resources/examples/' + task['task_args'])}"
        task["n_workers"] = 1
    path = tmp / "square.json"
    path.write_text(json.dumps(body))
    return path


async def test_standalone_runs_a_workflow_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    data, jobs, log = tmp_path / "data", Path(job_root(tmp_path.name)) / "jobs", tmp_path / "standalone.log"
    env = standalone_env(data, jobs, free_port())
    terminal, tty = pty.openpty()
    proc = start_standalone(env, log, stdout=tty, cwd=tmp_path)
    os.close(tty)
    wf, uuids = "", set()
    try:
        m, shown = await asyncio.to_thread(read_terminal, terminal, EXPORT, 60)
        url, token = m.group(1), m.group(2)
        assert url == f"http://127.0.0.1:{env['EWMS_REST_PORT']}"
        # the same lines, for another shell: `source $EWMS_DATA_DIR/standalone.env`
        env_file = data / "standalone.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        assert m.group(0).strip() in env_file.read_text()

        user = {
            **{k: v for k, v in env.items() if not k.startswith("EWMS_")},
            "EWMS_URL": url,
            "EWMS_TOKEN": token,
        }
        code, out, err = await ewms(user, "submit", str(square_request(tmp_path)), cwd=tmp_path)
        assert code == 0, err
        wf = out.strip()
        code, out, err = await ewms(user, "push", wf, "--lines", "-", stdin=b"1\n2\n3\n4\n5\n", timeout=90)
        assert code == 0, err
        code, out, err = await ewms(
            user, "pull", wf, "--out", "-", "--n", "5", "--timeout", "60", timeout=120
        )
        assert code == 0, err
        assert sorted(int(x) for x in out.split()) == [1, 4, 9, 16, 25]

        code, out, err = await ewms(user, "status", wf, timeout=30)
        assert code == 0 and wf in out, err
        code, out, err = await ewms(user, "finish", wf, timeout=30)
        assert code == 0, err

        client = EWMSClient(url, token)

        def all_complete() -> bool:
            tfs: list[dict[str, Any]] = client.taskforces(wf)
            uuids.update(tf["taskforce_uuid"] for tf in tfs)
            return all(tf["phase"] == "condor-complete" for tf in tfs)

        await wait_until(
            lambda: asyncio.to_thread(all_complete), 60, 0.5, what="every taskforce condor-complete"
        )
        # the workflow ended moments ago: its queues would wait a day's grace; the stop removes them
        assert not broker_objects_gone(wf)
        tms_pid = int(re.findall(r"TMS started \(pid (\d+)", log.read_text())[0])

        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 60) == 0
        assert broker_objects_gone(wf), "the stopped server left the ended workflow's broker objects"
        assert not alive(tms_pid), "the TMS outlived standalone"
        text = log.read_text()
        assert "TMS stopped (exit 0)" in text and "Traceback" not in text
        assert token not in text and "EWMS_TOKEN=" not in text  # the tokens went to the terminal only
        assert "EWMS_TOKEN" in shown
    finally:
        stop_process(proc)
        os.close(terminal)
        kill_pids(supervisor_pids(jobs))
        kill_pids(job_processes(uuids))
        if wf:
            await asyncio.to_thread(delete_broker_leftovers, wf)


def test_the_tms_ends_when_standalone_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves standalone no time to stop its TMS: the kernel sends it SIGTERM."""
    env = standalone_env(tmp_path / "data", Path(job_root(tmp_path.name)) / "jobs", free_port())
    log = tmp_path / "standalone.log"
    proc = start_standalone(env, log)
    try:
        started = wait_until_sync(
            lambda: re.findall(r"TMS started \(pid (\d+)", log.read_text()), 60, 0.1, what="the TMS"
        )
        tms_pid = int(started[0])
        proc.kill()
        proc.wait()
        wait_until_sync(lambda: not alive(tms_pid), 20, 0.1, what="the TMS to end")
    finally:
        stop_process(proc)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def test_standalone_port_in_use_is_one_line_and_prints_no_token(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = standalone_env(tmp_path / "data", Path(job_root(tmp_path.name)) / "jobs", port)
        res = run_standalone(env)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.startswith("ewms-server")]
    assert lines == [
        f"ewms-server standalone: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(set EWMS_REST_PORT to a free port, or stop the program holding it)"
    ], res.stderr
    assert "Traceback" not in res.stderr and "EWMS_TOKEN" not in res.stdout + res.stderr
    assert not (tmp_path / "data" / "standalone.env").exists()


def test_standalone_without_rabbitmq_says_how_to_start_one(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    env = standalone_env(
        tmp_path / "data",
        Path(job_root(tmp_path.name)) / "jobs",
        free_port(),
        EWMS_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{closed}/%2F",
        EWMS_BROKER_MANAGEMENT_URL=f"http://127.0.0.1:{closed}",
    )
    res = run_standalone(env)
    assert res.returncode == 1, res.stderr
    assert "no usable RabbitMQ at EWMS_BROKER_URL" in res.stderr
    assert "sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached" in res.stderr
    assert "rabbitmq-plugins enable rabbitmq_management" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "data" / "standalone.env").exists()


def test_standalone_explains_single_tenant_when_it_cannot_switch_users(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    """Without root the local backend cannot give jobs uids of their own: standalone says how
    to run them all as this user instead, before it starts or makes anything. (In-process: a
    subprocess as another uid could not run this interpreter, under /root.)"""
    from tms.backends import local_users

    monkeypatch.setattr(local_users, "can_switch_users", lambda: False)
    env = standalone_env(tmp_path / "data", Path(job_root(tmp_path.name)) / "jobs", free_port())
    env.pop("EWMS_TMS_LOCAL_SINGLE_TENANT", None)
    assert standalone.main(env) == 2
    err = capsys.readouterr().err
    assert err.startswith("ewms-server standalone: the local-backend TMS cannot start:")
    assert "EWMS_TMS_LOCAL_SINGLE_TENANT=true" in err and "--help" in err
    assert not (tmp_path / "data").exists()
