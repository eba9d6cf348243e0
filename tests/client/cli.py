"""Helpers of the client tests: run the `ewms` CLI as a user would, against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from rest_tools.client import RestClient

from ewms_server.testing import RunningServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "resources" / "examples"


def cli_env(srv: RunningServer, sub: str = "alice") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env | {"EWMS_URL": srv.url, "EWMS_TOKEN": srv.token(role="user", sub=sub)}


async def ewms(
    env: dict[str, str], *args: str, stdin: bytes | None = None, timeout: float = 60, cwd: Path = REPO
) -> tuple[int, str, str]:
    return await run([sys.executable, "-m", "ewms_client", *args], env, stdin, timeout, cwd)


async def run(
    argv: list[str], env: dict[str, str], stdin: bytes | None = None, timeout: float = 60, cwd: Path = REPO
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv[2:])} did not end within {timeout} s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def submit(env: dict[str, str], request: Path, *args: str) -> str:
    code, out, err = await ewms(env, "submit", str(request), *args)
    assert code == 0, err
    assert out.strip().startswith("WF-"), out
    return out.strip()


async def submit_json(env: dict[str, str], request: Path) -> dict[str, Any]:
    """`ewms submit --json`: the workflow, its task directives and taskforces."""
    code, out, err = await ewms(env, "submit", "--json", str(request))
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


async def run_pilot(
    srv: RunningServer, wf: str, tmp_path: Path, incoming: str, outgoing: str, **env: str
) -> tuple[int, str, str]:
    """Play the TMS: one pilot running tasks/square.py, with the workflow's queue credentials
    (here: from the public profiles, which the user may read) in a 0600 file; it stops after
    1 s without a message."""
    rc = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
    profiles = (await rc.request("GET", f"/v1/workflows/{wf}/mq-profiles/public"))["mqprofiles"]
    rc.close()
    by_alias = {p["alias"]: p for p in profiles}
    auth = tmp_path / "auth.json"
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    secrets = {
        p["mqid"]: {k: p[k] for k in ("auth_token", "broker_type", "broker_address")} for p in profiles
    }
    os.write(fd, json.dumps(secrets).encode())
    os.close(fd)
    pilot_env = cli_env(srv) | {
        "EWMS_PILOT_TASK_IMAGE": sys.executable,
        "EWMS_PILOT_TASK_ARGS": str(EXAMPLES / "tasks" / "square.py"),
        "EWMS_PILOT_QUEUE_INCOMING": by_alias[incoming]["mqid"],
        "EWMS_PILOT_QUEUE_OUTGOING": by_alias[outgoing]["mqid"],
        "EWMS_PILOT_QUEUE_AUTH_FILE": str(auth),
        "EWMS_PILOT_RUNNER": "process",
        "EWMS_PILOT_CHIRP": "none",
        "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "1",
        **env,
    }
    return await run([sys.executable, "-m", "ewms_pilot"], pilot_env)
