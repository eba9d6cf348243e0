"""``ewms-tms`` driven as a user would: a subprocess, its exit code and what it prints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from ewms_server.auth import mint_token
from ewms_server.testing import running_server

from .isolation import REPO


def tms_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    return {**env, "PYTHONPATH": str(REPO), **settings}


async def run_tms(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # the server runs on this test's event loop: wait for the TMS off it
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tms", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


async def test_version() -> None:
    out = await run_tms(tms_env(), "--version")
    assert out.returncode == 0 and out.stdout.startswith("ewms-tms ") and out.stdout.split()[1][0].isdigit()


async def test_every_bad_setting_named_at_once_exit_2() -> None:
    out = await run_tms(
        tms_env(
            EWMS_TMS_BACKEND="slurm",
            EWMS_TMS_WATCHER_INTERVAL="-1",
            EWMS_TMS_SITE_REQUIREMENTS="false) || (true",
            EWMS_TMS_LOG_LEVEL="loud",
            EWMS_TMS_LOCAL_MACHINES='{"m1": {"slots": 0}}',
            EWMS_TMS_HOLD_MEMORY_CAP="lots",
        )
    )
    assert out.returncode == 2, out
    [line] = out.stderr.splitlines()
    assert line.startswith("ewms-tms: configuration error: ")
    for name in (
        "EWMS_TMS_SERVER_URL is required",
        "EWMS_TMS_TOKEN is required",
        "EWMS_TMS_BACKEND",
        "EWMS_TMS_WATCHER_INTERVAL",
        "EWMS_TMS_SITE_REQUIREMENTS",
        "EWMS_TMS_LOG_LEVEL",
        "EWMS_TMS_LOCAL_MACHINES: machine m1: slots must be a whole number",
        "EWMS_TMS_HOLD_MEMORY_CAP",
    ):
        assert name in line, line
    assert out.stdout == ""


async def _against_server(tmp_path: Any, token_for: Any) -> subprocess.CompletedProcess[str]:
    async with running_server(cluster_locations={"local": "cli-schedd"}) as srv:
        env = tms_env(
            EWMS_TMS_SERVER_URL=srv.url,
            EWMS_TMS_TOKEN=token_for(srv),
            EWMS_TMS_SCHEDD="cli-schedd",
            EWMS_TMS_JOB_EVENT_LOG_DIR=str(tmp_path / "jobs"),
        )
        return await run_tms(env)


async def test_bad_token_is_one_line_and_exit_1(tmp_path: Any) -> None:
    forged = mint_token("x" * 48, sub="tms", role="system-tms", expires_s=600)  # another secret
    out = await _against_server(tmp_path, lambda srv: forged)
    assert out.returncode == 1, out
    assert out.stderr.splitlines() == [
        "ewms-tms: the server refused EWMS_TMS_TOKEN: it is bad or expired (HTTP 401)"
    ]
    assert forged not in out.stderr + out.stdout


async def test_wrong_role_is_one_line_and_exit_1(tmp_path: Any) -> None:
    out = await _against_server(tmp_path, lambda srv: srv.token(role="user", sub="alice"))
    assert out.returncode == 1, out
    assert out.stderr.splitlines() == [
        "ewms-tms: the server refused EWMS_TMS_TOKEN: it is not a system-tms token for this schedd (HTTP 403)"
    ]


async def test_help_lists_every_setting_with_its_default() -> None:
    from tms.config import SETTINGS

    out = await run_tms(tms_env(), "--help")
    assert out.returncode == 0
    for s in SETTINGS:
        assert s.env in out.stdout
    assert "(default: )" not in out.stdout and "(default (required))" not in out.stdout
    assert "/var/lib/ewms-tms/jobs" in out.stdout  # the job dir's default is absolute
