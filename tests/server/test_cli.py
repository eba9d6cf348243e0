"""`ewms-server` as an operator runs it: --help, config errors, mint-token, dev mode, SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest

from ewms_server.broker.rabbitmq import SETTINGS_DOCS
from ewms_server.config import SETTINGS, Config
from tests.conftest import workflow_body
from tests.processes import read_terminal

SECRET = "s" * 40


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ewms_server", *args], env=full, capture_output=True, text=True, timeout=60
    )


def test_help_documents_every_setting() -> None:
    res = run("--help")
    assert res.returncode == 0
    for s in SETTINGS:
        assert s.name in res.stdout
    for name, _, _ in SETTINGS_DOCS:
        assert name in res.stdout
    assert "mint-token" in res.stdout and "backup" in res.stdout and "standalone" in res.stdout
    res = run("standalone", "--help")
    assert res.returncode == 0
    for said in ("EWMS_TMS_LOCAL_SINGLE_TENANT=true", "resources/pilot-venv.sh", "rabbitmq-server -detached"):
        assert said in res.stdout


def test_refuses_to_start_without_auth() -> None:
    res = run()
    assert res.returncode == 2
    assert "no authentication configured" in res.stderr and "EWMS_DEV_MODE" in res.stderr


@pytest.mark.parametrize(
    "env,message",
    [
        ({"EWMS_REST_PORT": "eighty"}, "EWMS_REST_PORT"),
        ({"EWMS_AUTH_SECRET": "short"}, "at least 32 bytes"),
        ({"EWMS_CLUSTER_LOCATIONS": "[1]"}, "EWMS_CLUSTER_LOCATIONS"),
        ({"EWMS_CLUSTER_LOCATIONS": '{"a": {}}'}, "location 'a' needs a schedd"),
        ({"EWMS_DEV_MODE": "maybe"}, "EWMS_DEV_MODE"),
        ({"EWMS_SECRETS_KEY": "not-base64-of-32-bytes"}, "EWMS_SECRETS_KEY: expected the base64"),
    ],
)
def test_config_errors_are_clear(env: dict[str, str], message: str) -> None:
    res = run(env=env)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_every_bad_setting_is_named_at_once() -> None:
    res = run(
        env={
            "EWMS_REST_PORT": "x",
            "EWMS_LOOP_INTERVAL_S": "-1",
            "EWMS_DEV_MODE": "maybe",
            "EWMS_CLUSTER_LOCATIONS": "[1]",
        }
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    [line] = res.stderr.splitlines()
    assert line.startswith("ewms-server: configuration error: ")
    for name in ("EWMS_REST_PORT", "EWMS_LOOP_INTERVAL_S", "EWMS_DEV_MODE", "EWMS_CLUSTER_LOCATIONS"):
        assert name in line


def test_mint_token() -> None:
    res = run(
        "mint-token", "--sub", "carol", "--role", "admin", "--expires", "60", env={"EWMS_AUTH_SECRET": SECRET}
    )
    assert res.returncode == 0
    claims = jwt.decode(res.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "carol" and claims["ewms_role"] == "admin"
    assert 55 <= claims["exp"] - time.time() <= 61
    assert run("mint-token", "--sub", "x", "--role", "user").returncode == 2  # no secret
    assert run("mint-token", "--sub", "x", "--role", "root", env={"EWMS_AUTH_SECRET": SECRET}).returncode == 2


def test_secrets_key_prints_a_new_usable_key() -> None:
    keys = {run("secrets-key").stdout.strip() for _ in range(2)}
    assert len(keys) == 2  # random
    for key in keys:
        assert Config.from_env({"EWMS_SECRETS_KEY": key}).secrets_key is not None


def test_mint_token_for_a_tms_names_its_schedds() -> None:
    env = {"EWMS_AUTH_SECRET": SECRET, "EWMS_CLUSTER_LOCATIONS": '{"a": "ap1", "b": "ap2"}'}
    res = run(
        "mint-token", "--sub", "tms-1", "--role", "system-tms", "--schedd", "ap1", "--schedd", "ap2", env=env
    )
    assert res.returncode == 0 and res.stderr == ""
    claims = jwt.decode(res.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["ewms_role"] == "system-tms" and claims["ewms_schedds"] == ["ap1", "ap2"]
    # the claim's name follows the server's setting
    res = run(
        "mint-token", "--sub", "t", "--role", "system-tms", "--schedd", "ap1",
        env={**env, "EWMS_AUTH_SCHEDDS_CLAIM": "condor_aps"},
    )  # fmt: skip
    assert jwt.decode(res.stdout.strip(), SECRET, algorithms=["HS256"])["condor_aps"] == ["ap1"]
    # a schedd the server does not know is minted, with a warning
    res = run("mint-token", "--sub", "t", "--role", "system-tms", "--schedd", "ap9", env=env)
    assert res.returncode == 0 and "'ap9' is not in EWMS_CLUSTER_LOCATIONS" in res.stderr
    # a TMS token must name its schedds, and only a TMS token takes them
    for args in (["--role", "system-tms"], ["--role", "user", "--schedd", "ap1"]):
        res = run("mint-token", "--sub", "t", *args, env=env)
        assert res.returncode == 2 and "--schedd" in res.stderr and res.stdout == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dev_mode_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    data = tmp_path / "data" / "ewms"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env.update({"EWMS_DEV_MODE": "true", "EWMS_REST_PORT": str(port), "EWMS_DATA_DIR": str(data)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewms_server"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (
                    proc.stderr.read() if proc.stderr else ""
                )
                time.sleep(0.1)
        assert health["healthy"] is True and set(health["loops"]) == {
            "mq_activation",
            "launch_control",
            "autoscale",
            "jobs",
        }
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert f"data: SQLite at {data / 'ewms.sqlite3'}" in err  # where the data lives is logged
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "ewms.sqlite3").stat().st_mode) == 0o600
    # stderr is a pipe here, as a log file would be: the tokens are in a 0600 file, not in it
    tokens_file = data / "dev-tokens"
    assert f"development tokens: in {tokens_file}" in err
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    text = tokens_file.read_text()
    assert "DEVELOPMENT INSTANCE" in text
    token = next(line.split()[-1] for line in text.splitlines() if line.strip().startswith("user "))
    assert jwt.decode(token, options={"verify_signature": False})["ewms_role"] == "user"
    tms = next(line.split()[-1] for line in text.splitlines() if line.strip().startswith("system-tms "))
    assert jwt.decode(tms, options={"verify_signature": False})["ewms_schedds"] == [socket.gethostname()]
    assert token not in err and tms not in err


def _request(port: int, method: str, path: str, token: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _serve_until_healthy(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "ewms_server"], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(proc.stderr.read() if proc.stderr else "no output") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_the_default_store_keeps_workflows_across_a_restart(tmp_path: Path) -> None:
    from ewms_server.auth import mint_token

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env.update(
        {
            "EWMS_AUTH_SECRET": SECRET,
            "EWMS_REST_PORT": str(port),
            "EWMS_DATA_DIR": str(tmp_path),
            "EWMS_CLUSTER_LOCATIONS": '{"local": "s"}',
        }
    )
    token = mint_token(SECRET, sub="alice", role="user", expires_s=600)
    body = workflow_body()
    proc = _serve_until_healthy(env, port)
    try:
        made = _request(port, "POST", "/v1/workflows", token, body)
    finally:
        _stop(proc)
    wid = made["workflow"]["workflow_id"]
    proc = _serve_until_healthy(env, port)
    try:
        assert _request(port, "GET", f"/v1/workflows/{wid}", token)["workflow_id"] == wid
        uuid = made["taskforces"][0]["taskforce_uuid"]
        assert (
            _request(port, "GET", f"/v1/taskforces/{uuid}", token)["task_id"]
            == made["task_directives"][0]["task_id"]
        )
    finally:
        _stop(proc)


def test_refuses_a_store_newer_than_the_code(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "ewms.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 999")
    res = run("serve", env={"EWMS_DEV_MODE": "true", "EWMS_REST_PORT": "0", "EWMS_DATA_DIR": str(tmp_path)})
    assert res.returncode == 2
    refusal = [line for line in res.stderr.splitlines() if line.startswith("ewms-server:")]
    assert len(refusal) == 1 and "version 999, newer than this server's" in refusal[0], res.stderr


def test_port_in_use_is_one_line_naming_the_setting_and_no_token_is_shown(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run(
            "serve",
            env={"EWMS_DEV_MODE": "true", "EWMS_REST_PORT": str(port), "EWMS_DATA_DIR": str(tmp_path)},
        )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"ewms-server: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(set EWMS_REST_PORT to a free port, or stop the program holding it)"
    )
    assert "Traceback" not in res.stderr and "eyJ" not in res.stdout + res.stderr  # no JWT
    assert not (tmp_path / "dev-tokens").exists()  # tokens are minted only once bound


def test_dev_tokens_go_to_the_terminal_never_into_the_log(tmp_path: Path) -> None:
    """stdout on a terminal, stderr (the log) redirected to a file, as `ewms-server 2>log`:
    the tokens are on the terminal and in the 0600 file, not in the log."""
    import pty

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env.update({"EWMS_DEV_MODE": "true", "EWMS_REST_PORT": str(port), "EWMS_DATA_DIR": str(tmp_path)})
    terminal, tty = pty.openpty()
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "ewms_server"], env=env, stdout=tty, stderr=log_file)
    os.close(tty)
    try:
        _, text = read_terminal(terminal, re.compile(r"system-tms .*\n"), 30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(terminal)
    assert f"DEVELOPMENT INSTANCE on http://127.0.0.1:{port}" in text
    tokens = [line.split()[-1] for line in text.splitlines() if line.strip().startswith(("user ", "admin "))]
    assert len(tokens) == 2
    logged = log.read_text()
    assert "listening on" in logged and not any(t in logged for t in tokens)
    assert (tmp_path / "dev-tokens").read_text().replace("\n", "\r\n") in text  # a tty writes CRLF
    assert "development tokens: in" not in logged  # shown, so the log need not point at the file
