"""`ewms job …` as a user runs it, against a real server (no pilot here: the jobs stay
Queued; tests/test_e2e_jobs.py runs one to the end with --wait)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ewms_server.testing import RunningServer, running_server
from tests.client.cli import cli_env, ewms


@pytest.fixture
async def srv() -> AsyncIterator[RunningServer]:
    async with running_server(env={"EWMS_USER_MAX_ACTIVE_JOBS": "2"}) as s:
        yield s


async def test_run_list_status_files_delete(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    (tmp_path / "analyse.sh").write_text("wc -c data.txt > count.txt\n")
    (tmp_path / "data.txt").write_bytes(b"x" * 3_000_000)
    code, out, err = await ewms(env, "job", "run", "analyse.sh", "data.txt", "--n-cores", "2",
                                "--progress", cwd=tmp_path)  # fmt: skip
    assert code == 0, err
    jid = out.strip()
    assert jid.startswith("JB-") and "upload: 100.0%" in err
    code, out, err = await ewms(env, "job", "status", jid)
    assert code == 0 and out.startswith(f"{jid}  Queued"), (out, err)
    code, out, _ = await ewms(env, "job", "list")
    assert code == 0 and out.splitlines()[0].startswith(jid)
    job = srv.deps.store
    stored = await job.get("jobs", {"job_id": jid})
    assert stored is not None and {f["path"]: f["size"] for f in stored["inputs"]} == {
        "run.sh": 27, "data.txt": 3_000_000}  # fmt: skip
    assert stored["n_cores"] == 2
    code, out, _ = await ewms(env, "job", "files", jid)
    assert code == 0 and out == ""
    # not finished: no zip yet
    code, _, err = await ewms(env, "job", "get", jid, "--out", str(tmp_path / "r.zip"))
    assert code == 1 and "has not finished: Queued" in err
    code, out, _ = await ewms(env, "job", "delete", jid)
    assert code == 0 and out.strip() == f"deleted {jid}"
    code, _, err = await ewms(env, "job", "status", jid)
    assert code == 1 and "404" in err


async def test_clear_errors(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    code, _, err = await ewms(env, "job", "run", "missing.sh", cwd=tmp_path)
    assert code == 1 and "missing.sh: no such file" in err
    (tmp_path / "run.sh").write_text("true\n")
    code, _, err = await ewms(env, "job", "run", "run.sh", "--secrets", "bad-key", cwd=tmp_path)
    assert code == 1 and "400" in err and "secret key" in err
    for _ in range(2):
        assert (await ewms(env, "job", "run", "run.sh", cwd=tmp_path))[0] == 0
    code, _, err = await ewms(env, "job", "run", "run.sh", cwd=tmp_path)
    assert code == 1 and "429" in err and "EWMS_USER_MAX_ACTIVE_JOBS" in err
    code, _, err = await ewms(cli_env(srv, "bob"), "job", "status", "JB-000000000000-0000-000000")
    assert code == 1 and "404" in err
