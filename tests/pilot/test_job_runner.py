"""The pilot's job mode against a real server (no broker: the message is made here, with a
runner token set the way the jobs loop sets it)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ewms_client.jobs import JobsClient, Part
from ewms_pilot.config import Command
from ewms_pilot.job_runner import JobMessage, JobRunner, changed_files, safe_join
from ewms_pilot.runner import TaskFailed
from ewms_server.ops.jobs import new_runner_token
from ewms_server.storage.base import Change
from ewms_server.testing import RunningServer, running_server

BASH = Command("bash", "run.sh", {"EXTRA": "from-task-env"})


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(env={"EWMS_DATA_DIR": str(tmp_path / "data")}) as s:
        yield s


async def job_message(srv: RunningServer, script: bytes, *extra: Part, max_runtime: str = "60") -> bytes:
    jc = JobsClient(srv.url, srv.token(sub="alice"))
    parts = [Part("file", "run.sh", data=script), *extra, Part("max_runtime", data=max_runtime.encode())]
    jid = (await asyncio.to_thread(jc.submit, parts))["id"]
    token, digest = new_runner_token()
    await srv.deps.store.transition(
        "jobs", {"job_id": jid}, Change(set={"runner_token_sha256": digest, "published": True})
    )
    return json.dumps({"job_id": jid, "server_url": srv.url, "token": token}).encode()


def work(tmp_path: Path) -> str:
    (tmp_path / "work").mkdir(exist_ok=True)
    return str(tmp_path / "work")


async def job(srv: RunningServer, body: bytes) -> dict[str, object]:
    jid = json.loads(body)["job_id"]
    return await asyncio.to_thread(JobsClient(srv.url, srv.token(sub="alice")).status, jid)


async def test_outputs_are_the_new_and_changed_files_only(
    srv: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EWMS_PILOT_QUEUE_AUTH_FILE", "/where/the/queue/tokens/are")
    script = b"""echo "$EXTRA $EWMS_JOB_ID" > env.txt
echo changed > keep/changed.txt
ln -s /etc/hostname link
[ -z "$EWMS_PILOT_QUEUE_AUTH_FILE" ] || echo leaked > leaked.txt
"""
    body = await job_message(
        srv,
        script,
        Part("file", "keep/same.txt", data=b"same\n"),
        Part("file", "keep/changed.txt", data=b"old\n"),
    )
    out = await JobRunner("process", work(tmp_path)).run_task(BASH, body, 30)
    jid = json.loads(body)["job_id"]
    assert json.loads(out) == {"job_id": jid, "status": "Completed", "exit_code": 0}
    st = await job(srv, body)
    assert st["status"] == "Completed" and st["started"] is not None
    assert sorted(f["path"] for f in st["outputs"]) == [
        "env.txt",
        "keep/changed.txt",
        "stderr.txt",
        "stdout.txt",
    ]  # type: ignore[attr-defined]
    assert list((tmp_path / "work").iterdir()) == []  # the working directory is gone
    env_txt = io.BytesIO()
    await asyncio.to_thread(JobsClient(srv.url, srv.token(sub="alice")).download, jid, env_txt, "env.txt")
    assert env_txt.getvalue() == f"from-task-env {jid}\n".encode()


async def test_the_tasks_secrets_reach_run_sh_in_its_environment(srv: RunningServer, tmp_path: Path) -> None:
    """The secrets the pilot fetched for its task (Command.secrets, as in process mode) are
    in run.sh's environment as EWMS_SECRET_<KEY>, and only there (not in its arguments)."""
    cmd = Command("bash", "run.sh", {}, secrets={"EWMS_SECRET_API_KEY": "s3cret-value"})
    body = await job_message(srv, b'echo "$EWMS_SECRET_API_KEY" > secret.txt\necho "$@" > args.txt\n')
    out = json.loads(await JobRunner("process", work(tmp_path)).run_task(cmd, body, 30))
    assert out["status"] == "Completed", out
    jc, jid = JobsClient(srv.url, srv.token(sub="alice")), json.loads(body)["job_id"]
    got = {name: io.BytesIO() for name in ("secret.txt", "args.txt")}
    for name, buf in got.items():
        await asyncio.to_thread(jc.download, jid, buf, name)
    assert got["secret.txt"].getvalue() == b"s3cret-value\n"
    assert b"s3cret" not in got["args.txt"].getvalue()


async def test_max_runtime_kills_the_script_and_the_job_fails(srv: RunningServer, tmp_path: Path) -> None:
    body = await job_message(srv, b"echo before > partial.txt\nexec sleep 60\n", max_runtime="1")
    out = json.loads(await JobRunner("process", work(tmp_path)).run_task(BASH, body, 60))
    assert (out["status"], out["exit_code"]) == ("Failed", None)
    st = await job(srv, body)
    assert st["status"] == "Failed" and "max_runtime of 1 s" in str(st["message"])
    assert "partial.txt" in [f["path"] for f in st["outputs"]]  # type: ignore[attr-defined]


async def test_a_deleted_job_ends_the_message_quietly(srv: RunningServer, tmp_path: Path) -> None:
    body = await job_message(srv, b"true\n")
    jc = JobsClient(srv.url, srv.token(sub="alice"))
    await asyncio.to_thread(jc.delete, json.loads(body)["job_id"])
    out = json.loads(await JobRunner("process", work(tmp_path)).run_task(BASH, body, 30))
    assert out["status"] == "Gone"


async def test_an_unreachable_server_is_a_failed_task(tmp_path: Path) -> None:
    body = json.dumps({"job_id": "JB-x", "server_url": "http://127.0.0.1:9", "token": "ewmsjob_t"}).encode()
    with pytest.raises(TaskFailed, match="unreachable"):
        await JobRunner("process", work(tmp_path)).run_task(BASH, body, 30)


def test_messages_paths_and_listing(tmp_path: Path) -> None:
    for bad in (b"not json", b'{"job_id": "x"}', b'{"job_id": "x", "server_url": "file:///", "token": "t"}'):
        with pytest.raises(TaskFailed):
            JobMessage.parse(bad)
    msg = JobMessage.parse(b'{"job_id": "JB-1", "server_url": "https://h/", "token": "ewmsjob_SECRET"}')
    assert "SECRET" not in repr(msg) and msg.server_url == "https://h"
    for bad_path in ("../x", "/etc/x", "a//b", "a/./b", "a\\b"):
        with pytest.raises(TaskFailed):
            safe_join(str(tmp_path), bad_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "new").write_text("n")
    (tmp_path / "same").write_text("s")
    (tmp_path / "ln").symlink_to(tmp_path / "same")
    import hashlib

    same = hashlib.sha256(b"s").hexdigest()
    assert changed_files(str(tmp_path), {"same": same}) == ["d/new"]
