"""The task's secrets in the pilot: read where to fetch them, fetch them from a real server,
give them to the task only (never on a command line), and fail clearly when refused."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from ewms_pilot.chirp import Chirper, make_sink
from ewms_pilot.config import Command, ConfigError, PilotConfig
from ewms_pilot.pilot import Pilot
from ewms_pilot.runner import Runner, build_argv, process_env, task_env
from ewms_pilot.secrets import SecretsError, SecretsFetch, fetch_secrets, load_fetch, task_variables
from ewms_pilot.warm_runner import WarmRunner
from ewms_server.testing import running_server
from tests.conftest import SCHEDD, wait_until, workflow_body

STANDIN = Path(__file__).with_name("docker_standin.py")
VALUE = "pilot-test-value-with 'quotes' and spaces"
WRITE_SECRET = (
    "import os; open(os.environ['EWMS_TASK_OUTFILE'], 'w')"
    ".write(os.environ.get('EWMS_SECRET_A', 'absent') + '|' + os.environ.get('EWMS_SECRET_B', 'absent'))"
)


def with_secrets(**secrets: str) -> Command:
    return Command(sys.executable, f"-c {WRITE_SECRET!r}", {}, task_variables(secrets))


async def test_a_process_task_gets_its_secrets(tmp_path: Path) -> None:
    out = await Runner("process", str(tmp_path)).run_task(with_secrets(A=VALUE, B="b"), b"", None)
    assert out.decode() == f"{VALUE}|b"
    plain = Command(sys.executable, f"-c {WRITE_SECRET!r}", {})  # the init command has none
    assert await Runner("process", str(tmp_path)).run_task(plain, b"", None) == b"absent|absent"
    assert VALUE not in repr(with_secrets(A=VALUE))


def test_container_command_lines_carry_names_never_values() -> None:
    cmd = with_secrets(A=VALUE)
    env = task_env(cmd, "/scratch/t")
    docker = build_argv("docker", cmd, "/scratch/t", env, "n1")
    assert VALUE not in " ".join(docker)
    assert docker[docker.index("EWMS_SECRET_A") - 1] == "--env"  # by name: docker reads its own
    assert process_env("docker", env, cmd.secrets)["EWMS_SECRET_A"] == VALUE
    apptainer = build_argv("apptainer", cmd, "/scratch/t", env, "n1")
    assert VALUE not in " ".join(apptainer) and not any(a.startswith("EWMS_SECRET_A") for a in apptainer)
    app_env = process_env("apptainer", env, cmd.secrets)
    assert app_env["APPTAINERENV_EWMS_SECRET_A"] == VALUE and "EWMS_SECRET_A" not in app_env


async def test_docker_passes_them_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDIN} "$@"\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    out = await Runner("docker", str(work)).run_task(with_secrets(A=VALUE), b"", None)
    assert out.decode() == f"{VALUE}|absent"


def _auth_file(tmp_path: Path, content: Any, mode: int = 0o600) -> str:
    path = tmp_path / "pilot-queue-auth.json"
    path.write_text(json.dumps(content))
    path.chmod(mode)
    return str(path)


def test_load_fetch(tmp_path: Path) -> None:
    entry = {"url": "https://ewms.example.org/v1/pilot/secrets", "token": "TF-1.sig"}
    fetch = load_fetch(_auth_file(tmp_path, {"Q-1": {}, "ewms_secrets": entry}))
    assert fetch == SecretsFetch(entry["url"], entry["token"]) and "TF-1.sig" not in repr(fetch)
    assert load_fetch(_auth_file(tmp_path, {"Q-1": {}})) is None  # the task names none
    assert load_fetch(None) is None  # EWMS's job environment: no file, no secrets
    for bad in (
        {"url": "file:///etc/passwd", "token": "t"},
        {"url": entry["url"]},
        "x",
        {"url": 1, "token": "t"},
    ):
        with pytest.raises(ConfigError, match="malformed 'ewms_secrets'"):
            load_fetch(_auth_file(tmp_path, {"ewms_secrets": bad}))


async def _server_token(srv: Any, value: str) -> tuple[str, str]:
    """alice's secret A, a workflow naming it, and the fetch token pending-starter hands out."""
    http = AsyncHTTPClient()

    async def call(method: str, path: str, body: Any = None, role: str = "user") -> Any:
        r = await http.fetch(
            srv.url + path,
            method=method,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Bearer {srv.token(role=role, sub='alice')}"},
        )
        return json.loads(r.body)

    await call("PUT", "/v1/secrets/A", {"value": value})
    body = workflow_body()
    body["tasks"][0]["secrets"] = ["A"]
    created = await call("POST", "/v1/workflows", body)

    async def starter() -> Any:
        return await call("GET", f"/v1/tms/pending-starter/taskforces?schedd={SCHEDD}", role="admin")

    found = await wait_until(starter)
    return found["secrets_fetch_token"], created["workflow"]["workflow_id"]


async def test_fetch_from_a_real_server() -> None:
    async with running_server(env={"EWMS_LOOP_INTERVAL_S": "0.05"}) as srv:
        token, wid = await _server_token(srv, VALUE)
        url = f"{srv.url}/v1/pilot/secrets"
        assert await fetch_secrets(SecretsFetch(url, token), 5, asyncio.Event()) == {"A": VALUE}
        with pytest.raises(SecretsError, match=r"refused the task's secrets \(HTTP 401\)"):
            await fetch_secrets(SecretsFetch(url, token + "x"), 5, asyncio.Event())
        await AsyncHTTPClient().fetch(
            f"{srv.url}/v1/workflows/{wid}/actions/abort",
            method="POST",
            body="",
            headers={"Authorization": f"Bearer {srv.token(role='user', sub='alice')}"},
        )
        with pytest.raises(SecretsError, match=r"HTTP 403\).*has ended") as info:
            await fetch_secrets(SecretsFetch(url, token), 5, asyncio.Event())
        assert token not in str(info.value)


async def test_an_unreachable_server_is_retried_then_fatal() -> None:
    fetch = SecretsFetch("http://127.0.0.1:1/v1/pilot/secrets", "TF-1.sig")
    with pytest.raises(SecretsError, match=r"could not fetch the task's secrets for 0\.6 s"):
        await fetch_secrets(fetch, 0.6, asyncio.Event())
    stop = asyncio.Event()
    stop.set()
    assert await fetch_secrets(fetch, 30, stop) is None  # a stop ends the wait


async def test_a_refused_fetch_is_a_fatal_error_before_any_task(tmp_path: Path) -> None:
    chirps = tmp_path / "chirps"
    auth = _auth_file(
        tmp_path, {"Q-1": {"auth_token": "t", "broker_type": "rabbitmq", "broker_address": "h:1/v"}}
    )
    assert stat.S_IMODE(os.stat(auth).st_mode) == 0o600
    cfg = PilotConfig.from_env(
        {
            "EWMS_PILOT_TASK_IMAGE": "/bin/true",
            "EWMS_PILOT_QUEUE_INCOMING": "Q-1",
            "EWMS_PILOT_QUEUE_AUTH_FILE": auth,
            "EWMS_PILOT_CHIRP": "file",
            "EWMS_PILOT_CHIRP_FILE": str(chirps),
            "EWMS_PILOT_RUNNER": "process",
        }
    )
    async with running_server() as srv:
        fetch = SecretsFetch(f"{srv.url}/v1/pilot/secrets", "TF-nothing.forged")
        pilot = Pilot(cfg, {}, Chirper(make_sink("file", str(chirps)), 0), asyncio.Event(), fetch)
        assert await pilot.run() == 1
    text = chirps.read_text()
    assert 'HTChirpEWMSPilotStatus: "FatalError"' in text
    assert "refused the task's secrets (HTTP 401)" in text and "forged" not in text


async def test_a_warm_worker_gets_its_secrets(tmp_path: Path) -> None:
    script = tmp_path / "warm_secret.py"
    script.write_text(
        "import os\nfrom ewms_pilot.worker import serve\n"
        "serve(lambda data: data + b'|' + os.environ.get('EWMS_SECRET_A', 'absent').encode())\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    runner = WarmRunner("process", str(work), start_timeout=30)
    try:
        cmd = Command(sys.executable, str(script), {}, task_variables({"A": VALUE}))
        assert await runner.run_task(cmd, b"m", None) == b"m|" + VALUE.encode()
    finally:
        await runner.close()
