"""Helpers of the client tests: run the `ewms` CLI as a user would, against a real server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from ewms_server.testing import RunningServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "resources" / "examples"
BROKER_URL = os.environ.get("EWMS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


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
