"""POST/GET/DELETE /v1/jobs and the runner routes, against a real server (no broker: the
runner's part is played here with a token made the way the jobs loop makes it)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ewms_client.jobs import JobsClient, MultipartBody, Part
from ewms_server.ops.jobs import new_runner_token
from ewms_server.storage.base import Change
from ewms_server.storage.files_dir import DirectoryFileStore
from ewms_server.testing import RunningServer, running_server
from tests.conftest import wait_until

SCRIPT = b"#!/bin/bash\necho hi > out.txt\n"


@pytest.fixture
async def srv(tmp_path: Path, backend: str | None) -> AsyncIterator[RunningServer]:
    """SQLite, mongomock (both with the directory file cache), or a real MongoDB (GridFS)."""
    env = {"EWMS_DATA_DIR": str(tmp_path / "data"), "EWMS_USER_MAX_ACTIVE_JOBS": "3",
           "EWMS_JOBS_MAX_UPLOAD_BYTES": str(1 << 20)}  # fmt: skip
    async with running_server(env=env, mongodb_url=backend) as s:
        yield s


async def stored(srv: RunningServer, job_id: str | None = None) -> list[str]:
    """The files the cache holds (of one job), committed or being written."""
    files = srv.deps.files
    if isinstance(files, DirectoryFileStore):
        root = Path(files.root) / (job_id or "")
        return [str(p) for p in root.rglob("*") if p.is_file()]
    db = files._db  # type: ignore[union-attr]
    flt = {} if job_id is None else {"metadata.ns": job_id}
    docs = await db["ewms_files.files"].find(flt).to_list(None)
    chunks = await db["ewms_files.chunks"].count_documents({})
    return [d["filename"] for d in docs] + (["<chunks>"] if chunks and job_id is None and not docs else [])


def client(srv: RunningServer, sub: str = "alice", role: str = "user") -> JobsClient:
    return JobsClient(srv.url, srv.token(sub=sub, role=role))


def parts(**fields: str) -> list[Part]:
    out = [Part("file", "run.sh", data=SCRIPT), Part("file", "data/in.txt", data=b"input\n")]
    return out + [Part(k, data=v.encode()) for k, v in fields.items()]


def post(srv: RunningServer, body: Any, sub: str = "alice", **headers: str) -> requests.Response:
    h = {"Authorization": f"Bearer {srv.token(sub=sub)}", **headers}
    if isinstance(body, MultipartBody):
        h.setdefault("Content-Type", body.content_type)
    return requests.post(srv.url + "/v1/jobs", data=body, headers=h, timeout=30)


async def submit(srv: RunningServer, sub: str = "alice", **fields: str) -> str:
    r = await asyncio.to_thread(post, srv, MultipartBody(parts(**fields)), sub)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def put_secret(srv: RunningServer, key: str, sub: str = "alice") -> None:
    r = requests.put(
        f"{srv.url}/v1/secrets/{key}",
        json={"value": f"value-of-{key}"},
        headers={"Authorization": f"Bearer {srv.token(sub=sub)}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


async def nothing_stored(srv: RunningServer) -> None:
    store = srv.deps.store
    assert await store.count("jobs", {}) == 0
    assert await store.count("workflows", {}) == 0
    assert await stored(srv) == []


async def test_a_job_is_created_queued_with_its_files(srv: RunningServer) -> None:
    for key in ("API_KEY", "other_1"):
        await asyncio.to_thread(put_secret, srv, key)
    jid = await submit(srv, n_cores="2", memory="2G", max_runtime="60", secrets="API_KEY, other_1")
    c = client(srv)
    st = await asyncio.to_thread(c.status, jid)
    assert (st["status"], st["exit_code"], st["n_cores"], st["memory"]) == ("Queued", None, 2, "2G")
    assert st["secrets"] == ["API_KEY", "other_1"]
    assert {f["path"]: f["sha256"] for f in st["inputs"]} == {
        "run.sh": hashlib.sha256(SCRIPT).hexdigest(),
        "data/in.txt": hashlib.sha256(b"input\n").hexdigest(),
    }
    assert [j["id"] for j in await asyncio.to_thread(c.jobs)] == [jid]
    # a one-task workflow, its pilot in job mode, run.sh's runtime as the task timeout
    td = await srv.deps.store.get("task_directives", {"workflow_id": st["workflow_id"]})
    tf = await srv.deps.store.get("taskforces", {"workflow_id": st["workflow_id"]})
    assert td is not None and tf is not None
    assert (td["task_image"], td["task_args"]) == ("bash", "run.sh")
    env = tf["pilot_config"]["environment"]
    assert (env["EWMS_PILOT_TASK_MODE"], env["EWMS_PILOT_TASK_TIMEOUT"]) == ("job", "60")
    # unfinished: GET without format is still the status
    r = await asyncio.to_thread(c._call, "GET", f"/v1/jobs/{jid}")
    assert r.headers["Content-Type"] == "application/json" and r.json()["status"] == "Queued"


async def test_a_jobs_secrets_are_its_tasks_and_must_be_the_users(srv: RunningServer) -> None:
    """A job's `secrets` become its one task's `secrets` (the secrets API delivers them to
    run.sh as EWMS_SECRET_<KEY>): a key the user has no secret for is a 400, even when another
    user has it; one the user has is accepted and the task directive names it."""
    await asyncio.to_thread(put_secret, srv, "BOBS", "bob")
    await asyncio.to_thread(put_secret, srv, "MINE")
    r = await asyncio.to_thread(post, srv, MultipartBody(parts(secrets="MINE,BOBS")))
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("form field secrets: you have no secret named BOBS"), r.text
    await nothing_stored(srv)
    jid = await submit(srv, secrets="MINE")
    job = await srv.deps.store.get("jobs", {"job_id": jid})
    assert job is not None and job["secrets"] == ["MINE"]
    td = await srv.deps.store.get("task_directives", {"workflow_id": job["workflow_id"]})
    assert td is not None and td["secrets"] == ["MINE"]


async def test_a_job_naming_secrets_is_503_without_a_secrets_key(tmp_path: Path) -> None:
    env = {"EWMS_DATA_DIR": str(tmp_path / "data"), "EWMS_SECRETS_KEY": ""}
    async with running_server(env=env) as s:
        r = await asyncio.to_thread(post, s, MultipartBody(parts(secrets="MINE")))
        assert r.status_code == 503 and "EWMS_SECRETS_KEY" in r.json()["error"], r.text
        await nothing_stored(s)
        await submit(s)  # a job naming none is fine


@pytest.mark.parametrize(
    "name, why",
    [("../x", "'..'"), ("/etc/passwd", "relative"), ("a\0b", "NUL"), ("a//b", "empty"), ("a\\b", "'/'")],
)
async def test_bad_file_names_are_400_and_store_nothing(srv: RunningServer, name: str, why: str) -> None:
    body = MultipartBody([*parts(), Part("file", name, data=b"x" * 100_000)])
    r = await asyncio.to_thread(post, srv, body)
    assert r.status_code == 400 and why in r.json()["error"], r.text
    await nothing_stored(srv)


@pytest.mark.parametrize(
    "body_parts, why",
    [
        ([Part("file", "in.txt", data=b"x")], "run.sh"),
        ([*parts(), Part("file", "run.sh", data=b"again")], "twice"),
        (parts(n_cores="many"), "n_cores"),
        (parts(n_cores="0"), "n_cores"),
        (parts(memory="lots"), "memory"),
        (parts(memory="2T"), "form field memory: must be between"),
        (parts(n_cores="300"), "form field n_cores: at most 256 (EWMS_MAX_WORKER_CORES)"),
        (parts(secrets="GOOD,bad-key"), "secret key"),
        (parts(cluster_location="mars"), "cluster_location"),
        (parts(colour="blue"), "unknown form field"),
    ],
)
async def test_bad_requests_are_400_and_store_nothing(
    srv: RunningServer, body_parts: list[Part], why: str
) -> None:
    r = await asyncio.to_thread(post, srv, MultipartBody(body_parts))
    assert r.status_code == 400 and why in r.json()["error"], r.text
    await nothing_stored(srv)


async def test_not_multipart_or_cut_short_is_400(srv: RunningServer) -> None:
    r = await asyncio.to_thread(post, srv, b'{"a": 1}', **{"Content-Type": "application/json"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    body = MultipartBody(parts())
    cut = b"".join(body)[:-20]
    r = await asyncio.to_thread(post, srv, cut, **{"Content-Type": body.content_type})
    assert r.status_code == 400 and "closing boundary" in r.json()["error"]
    await nothing_stored(srv)


async def test_too_large_is_a_json_413_declared_or_chunked(srv: RunningServer) -> None:
    big = MultipartBody([*parts(), Part("file", "big", data=b"x" * (2 << 20))])
    r = await asyncio.to_thread(post, srv, big)  # Content-Length: refused before the body
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunked() -> Any:
        yield from big

    r = await asyncio.to_thread(post, srv, chunked(), **{"Content-Type": big.content_type})
    assert r.status_code == 413 and "EWMS_JOBS_MAX_UPLOAD_BYTES" in r.json()["error"]
    await nothing_stored(srv)


async def test_another_users_job_is_404_and_admin_sees_it(srv: RunningServer) -> None:
    jid = await submit(srv)
    bob = client(srv, "bob")
    for method, path in (("GET", f"/v1/jobs/{jid}"), ("GET", f"/v1/jobs/{jid}/files"),
                         ("GET", f"/v1/jobs/{jid}/files/out.txt"), ("DELETE", f"/v1/jobs/{jid}")):  # fmt: skip
        r = await asyncio.to_thread(bob.session.request, method, srv.url + path)
        assert r.status_code == 404, (method, path, r.status_code)
    assert await asyncio.to_thread(bob.jobs) == []
    admin = client(srv, "root", "admin")
    assert [j["id"] for j in await asyncio.to_thread(admin.jobs)] == [jid]


async def test_quota_of_unfinished_jobs_is_429_before_the_upload(srv: RunningServer) -> None:
    for _ in range(3):
        await submit(srv)
    r = await asyncio.to_thread(post, srv, MultipartBody(parts()))
    assert r.status_code == 429 and "EWMS_USER_MAX_ACTIVE_JOBS" in r.json()["error"]
    assert int(r.headers["Retry-After"]) >= 1
    assert await srv.deps.store.count("jobs", {}) == 3
    await submit(srv, sub="bob")  # another user's quota is their own


async def runner_token(srv: RunningServer, jid: str) -> str:
    token, digest = new_runner_token()
    await srv.deps.store.transition(
        "jobs", {"job_id": jid}, Change(set={"runner_token_sha256": digest, "published": True})
    )
    return token


def runner(srv: RunningServer, token: str) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    return s


async def test_runner_round_trip_then_zip_listing_and_one_file(srv: RunningServer) -> None:
    jid = await submit(srv)
    token = await runner_token(srv, jid)
    run = runner(srv, token)
    base = f"{srv.url}/v1/jobs/{jid}/runner"
    got = (await asyncio.to_thread(run.get, base + "/inputs")).json()
    assert sorted(f["path"] for f in got["files"]) == ["data/in.txt", "run.sh"]
    r = await asyncio.to_thread(run.get, base + "/inputs/data/in.txt")
    assert r.content == b"input\n"
    assert (await asyncio.to_thread(run.post, base + "/status", json={"state": "Running"})).status_code == 200
    blob = os.urandom(300_000)
    for path, data in (("out.txt", b"hi\n"), ("sub/blob.bin", blob), ("data/in.txt", b"changed\n")):
        r = await asyncio.to_thread(run.put, f"{base}/outputs/{path}", data=data)
        assert r.status_code == 200 and r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    r = await asyncio.to_thread(run.post, base + "/status", json={"state": "Completed", "exit_code": 0})
    assert r.status_code == 200
    # finished: no more reports or uploads, and the workflow is finished
    r = await asyncio.to_thread(run.put, f"{base}/outputs/late.txt", data=b"x")
    assert r.status_code == 422
    c = client(srv)
    wid = (await asyncio.to_thread(c.status, jid))["workflow_id"]
    wf = await srv.deps.store.get("workflows", {"workflow_id": wid})
    assert wf is not None and wf["deactivated"] == "FINISHED"

    assert [(f["path"], f["size"]) for f in await asyncio.to_thread(c.files, jid)] == [
        ("data/in.txt", 8), ("out.txt", 3), ("sub/blob.bin", 300_000)]  # fmt: skip
    one = io.BytesIO()
    await asyncio.to_thread(c.download, jid, one, "sub/blob.bin")
    assert one.getvalue() == blob
    whole = io.BytesIO()
    await asyncio.to_thread(c.download, jid, whole)
    z = zipfile.ZipFile(whole)
    assert z.testzip() is None
    assert {n: z.read(n) for n in z.namelist()} == {
        "run.sh": SCRIPT, "data/in.txt": b"changed\n", "out.txt": b"hi\n", "sub/blob.bin": blob}  # fmt: skip
    st = await asyncio.to_thread(c.status, jid)
    assert (st["status"], st["exit_code"]) == ("Completed", 0)


async def test_runner_routes_take_only_that_jobs_token(srv: RunningServer) -> None:
    one, two = await submit(srv), await submit(srv)
    token = await runner_token(srv, one)
    await runner_token(srv, two)
    user = srv.token(sub="alice")
    admin = srv.token(sub="root", role="admin")
    for bearer in (user, admin, token + "x", "ewmsjob_guess"):
        r = await asyncio.to_thread(runner(srv, bearer).get, f"{srv.url}/v1/jobs/{one}/runner/inputs")
        assert r.status_code == 401, bearer
    r = await asyncio.to_thread(runner(srv, token).get, f"{srv.url}/v1/jobs/{two}/runner/inputs")
    assert r.status_code == 401
    r = await asyncio.to_thread(runner(srv, token).get, f"{srv.url}/v1/jobs/{one}")
    assert r.status_code == 401  # and it opens no user route


async def test_delete_cancels_removes_every_byte_then_404(srv: RunningServer) -> None:
    jid = await submit(srv)
    st = await asyncio.to_thread(client(srv).status, jid)
    assert await stored(srv, jid)
    r = await asyncio.to_thread(client(srv).session.delete, f"{srv.url}/v1/jobs/{jid}")
    assert r.status_code == 200
    assert await stored(srv, jid) == []
    wf = await srv.deps.store.get("workflows", {"workflow_id": st["workflow_id"]})
    assert wf is not None and wf["deactivated"] == "ABORTED"
    r = await asyncio.to_thread(client(srv).session.get, f"{srv.url}/v1/jobs/{jid}")
    assert r.status_code == 404
    assert json.loads(r.text)["error"].startswith("no job")


async def test_runner_bad_output_path_is_400_and_too_large_413(srv: RunningServer) -> None:
    jid = await submit(srv)
    run = runner(srv, await runner_token(srv, jid))
    base = f"{srv.url}/v1/jobs/{jid}/runner/outputs"
    r = await asyncio.to_thread(run.put, base + "/a/../../x", data=b"x")
    assert r.status_code in (400, 404), r.text  # clients may normalize '..' away: never stored
    r = await asyncio.to_thread(run.put, base + "/a%00b", data=b"x")
    assert r.status_code == 400 and "NUL" in r.json()["error"]
    r = await asyncio.to_thread(run.put, base + "/big", data=b"x" * (2 << 20))
    assert r.status_code == 413
    assert (await srv.deps.store.get("jobs", {"job_id": jid}) or {})["outputs"] == []
    assert srv.deps.files is not None
    names = await srv.deps.files.names(jid)
    assert names == ["in/data/in.txt", "in/run.sh"]
    per_file = 2 if isinstance(srv.deps.files, DirectoryFileStore) else 1  # (data and name)
    assert len(await stored(srv, jid)) == per_file * len(names)  # no part of a refused upload


async def test_an_aborted_workflow_shows_the_job_cancelled(srv: RunningServer) -> None:
    jid = await submit(srv)
    c = client(srv)
    wid = (await asyncio.to_thread(c.status, jid))["workflow_id"]
    r = await asyncio.to_thread(c.session.post, f"{srv.url}/v1/workflows/{wid}/actions/abort", json={})
    assert r.status_code == 200
    st = await asyncio.to_thread(c.status, jid)
    assert st["status"] == "Cancelled" and "aborted" in st["message"]


async def test_retention_deletes_a_finished_jobs_files(tmp_path: Path) -> None:
    env = {
        "EWMS_DATA_DIR": str(tmp_path / "data"),
        "EWMS_JOBS_RETENTION_S": "0",
        "EWMS_LOOP_INTERVAL_S": "0.1",
    }
    async with running_server(env=env) as s:
        jid = await submit(s)
        run = runner(s, await runner_token(s, jid))
        base = f"{s.url}/v1/jobs/{jid}/runner"
        assert (await asyncio.to_thread(run.put, base + "/outputs/o.txt", data=b"o")).status_code == 200
        assert await stored(s, jid)  # unfinished: kept whatever the retention
        r = await asyncio.to_thread(run.post, base + "/status", json={"state": "Failed", "exit_code": 3})
        assert r.status_code == 200

        async def expired() -> bool:
            job = await s.deps.store.get("jobs", {"job_id": jid})
            return job is not None and job["files_deleted"]

        await wait_until(expired, 10)
        assert await stored(s, jid) == []
        st = await asyncio.to_thread(client(s).status, jid)
        assert (st["status"], st["exit_code"], st["outputs"], st["files_deleted"]) == ("Failed", 3, [], True)
        r = await asyncio.to_thread(client(s).session.get, f"{s.url}/v1/jobs/{jid}")
        assert r.headers["Content-Type"] == "application/json"  # the status, no zip


async def test_an_upload_cut_off_by_the_client_leaves_nothing(srv: RunningServer) -> None:
    body = b"".join(MultipartBody([*parts(), Part("file", "big", data=b"x" * 600_000)]))
    boundary = body[2 : body.index(b"\r\n")].decode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", srv.server.port)
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: Bearer {srv.token(sub='alice')}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    )
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()

    async def stored_some() -> bool:
        return bool(await stored(srv))

    await wait_until(stored_some, 10)  # run.sh is in, big.bin on its way
    writer.close()

    async def cleaned() -> bool:
        return not await stored(srv)

    await wait_until(cleaned, 10)
    await nothing_stored(srv)
