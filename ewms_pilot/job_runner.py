"""The pilot's job mode (EWMS_PILOT_TASK_MODE=job): each message names one EWMS job.

The message is JSON `{"job_id", "server_url", "token"}`; the token opens that job's runner
routes only, and is never logged nor passed to the script. For a message the runner:

1. fetches the job's input files over HTTP(S) into a fresh private working directory
   (each checked against its SHA-256);
2. reports Running, and runs `run.sh` there with the task program (`bash`; with containers
   an image that has it), stdout and stderr to `stdout.txt` and `stderr.txt`, killed after
   the job's max_runtime (the task timeout);
3. uploads every regular file of the directory that is new or changed (streamed, one PUT
   each), then reports Completed (exit 0) or Failed with the exit code;
4. returns `{"job_id", "status", "exit_code"}` as the task's result (to the output queue).

A script that fails is the job's outcome, not a task failure: the message is acked. A
transfer that fails raises TaskFailed (the message is returned and retried); a job the
server no longer runs (deleted, already finished: 401/404/422) ends the message quietly.
Only the standard library is used: the pilot's venv has no HTTP client.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import logging
import os
import shutil
import ssl
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .config import Command
from .runner import Runner, TaskFailed, build_argv, kill_process, process_env

LOGGER = logging.getLogger(__name__)
CHUNK = 1024 * 1024
HTTP_TIMEOUT_S = 120.0
STDOUT, STDERR = "stdout.txt", "stderr.txt"
GONE_STATUSES = (401, 404, 422)


class JobGone(Exception):
    """The server no longer runs this job (deleted, or already finished)."""


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    server_url: str
    token: str

    def __repr__(self) -> str:  # never print the token
        return f"JobMessage(job_id={self.job_id!r}, server_url={self.server_url!r})"

    @classmethod
    def parse(cls, body: bytes) -> JobMessage:
        try:
            data = json.loads(body)
            msg = cls(str(data["job_id"]), str(data["server_url"]).rstrip("/"), str(data["token"]))
        except (ValueError, KeyError, TypeError):
            raise TaskFailed("not a job message (expected JSON with job_id, server_url, token)") from None
        if urlsplit(msg.server_url).scheme not in ("http", "https"):
            raise TaskFailed("job message: server_url must be http(s)")
        return msg


def safe_join(root: str, path: str) -> str:
    """`root/path` for a relative path with no '..', '.' or empty part (the server's rule)."""
    parts = path.split("/")
    if path.startswith("/") or "\0" in path or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise TaskFailed(f"the server sent an unsafe input path {path[:80]!r}")
    return os.path.join(root, *parts)


class JobClient:
    """Blocking HTTP to the job's runner routes (called through asyncio.to_thread)."""

    def __init__(self, msg: JobMessage) -> None:
        self.msg = msg
        u = urlsplit(msg.server_url)
        self._https = u.scheme == "https"
        self._host = u.hostname or ""
        self._port = u.port
        self._prefix = u.path.rstrip("/") + f"/v1/jobs/{quote(msg.job_id, safe='')}/runner"

    def _conn(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=HTTP_TIMEOUT_S, context=ssl.create_default_context(),
                blocksize=CHUNK,
            )  # fmt: skip
        return http.client.HTTPConnection(self._host, self._port, timeout=HTTP_TIMEOUT_S, blocksize=CHUNK)

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.msg.token}", **extra}

    def _check(self, what: str, resp: http.client.HTTPResponse) -> None:
        if resp.status in GONE_STATUSES:
            raise JobGone(f"{what}: {resp.status} {resp.read(300).decode(errors='replace')}")
        if resp.status >= 300:
            raise TaskFailed(f"job server: {what}: HTTP {resp.status}")

    def _call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        conn = self._conn()
        try:
            conn.request(method, self._prefix + path, body=body, headers=self._headers(**headers))
            resp = conn.getresponse()
            self._check(f"{method} {path.split('/')[1]}", resp)
            return json.loads(resp.read())
        except (OSError, http.client.HTTPException) as e:
            raise TaskFailed(f"job server unreachable: {type(e).__name__}") from None
        finally:
            conn.close()

    def inputs(self) -> dict[str, Any]:
        return dict(self._call("GET", "/inputs"))

    def download(self, path: str, dest: str, sha256: str) -> None:
        conn = self._conn()
        try:
            conn.request("GET", f"{self._prefix}/inputs/{quote(path)}", headers=self._headers())
            resp = conn.getresponse()
            self._check("GET inputs", resp)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            h = hashlib.sha256()
            with open(dest, "wb") as f:
                while chunk := resp.read(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
        except (OSError, http.client.HTTPException) as e:
            raise TaskFailed(f"job input download failed: {type(e).__name__}") from None
        finally:
            conn.close()
        if h.hexdigest() != sha256:
            raise TaskFailed(f"job input {path!r} arrived damaged (SHA-256 differs)")

    def upload(self, path: str, src: str) -> None:
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._call("PUT", f"/outputs/{quote(path)}", f, **{"Content-Length": str(size),
                       "Content-Type": "application/octet-stream"})  # fmt: skip

    def report(self, state: str, exit_code: int | None = None, message: str = "") -> None:
        body = json.dumps({"state": state, "exit_code": exit_code, "message": message[:4000]})
        self._call("POST", "/status", body.encode(), **{"Content-Type": "application/json"})


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def changed_files(workdir: str, inputs: dict[str, str]) -> list[str]:
    """Relative paths of the regular files that are new or differ from their input (symlinks
    are not followed: the server gets files the script wrote, nothing they point to)."""
    out = []
    for dirpath, dirs, files in os.walk(workdir):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
        for name in files:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            rel = os.path.relpath(full, workdir).replace(os.sep, "/")
            if rel in inputs and _digest(full) == inputs[rel]:
                continue
            out.append(rel)
    return sorted(out)


class JobRunner(Runner):
    """Runs EWMS jobs (see the module docstring)."""

    async def run_task(self, cmd: Command, body: bytes, timeout: float | None) -> bytes:
        msg = JobMessage.parse(body)
        client = JobClient(msg)
        workdir = tempfile.mkdtemp(prefix="ewms-job-", dir=self.work_dir)  # 0700
        try:
            status, code = await self._run_job(client, cmd, workdir, timeout)
        except JobGone as e:
            LOGGER.info("job %s is no longer run by the server (%s): message done", msg.job_id, e)
            status, code = "Gone", None
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        return json.dumps({"job_id": msg.job_id, "status": status, "exit_code": code}).encode()

    async def _run_job(
        self, client: JobClient, cmd: Command, workdir: str, timeout: float | None
    ) -> tuple[str, int | None]:
        listing = await asyncio.to_thread(client.inputs)
        inputs = {f["path"]: f["sha256"] for f in listing["files"]}
        for f in listing["files"]:
            await asyncio.to_thread(client.download, f["path"], safe_join(workdir, f["path"]), f["sha256"])
        max_runtime = float(listing.get("max_runtime") or 0) or timeout
        await asyncio.to_thread(client.report, "Running", None, "run.sh started")
        code, message = await self._script(cmd, workdir, client.msg.job_id, max_runtime)
        for rel in await asyncio.to_thread(changed_files, workdir, inputs):
            await asyncio.to_thread(client.upload, rel, os.path.join(workdir, rel))
        state = "Completed" if code == 0 else "Failed"
        await asyncio.to_thread(client.report, state, code, message)
        LOGGER.info("job %s: %s (%s)", client.msg.job_id, state, message)
        return state, code

    async def _script(
        self, cmd: Command, workdir: str, job_id: str, timeout: float | None
    ) -> tuple[int | None, str]:
        """run.sh's exit code (None when killed at the timeout) and what happened in words."""
        name = f"ewms-job-{uuid.uuid4().hex[:12]}"
        extra = {**cmd.env, "EWMS_JOB_ID": job_id}
        argv = build_argv(self.runner, cmd, workdir, extra, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        out = os.open(os.path.join(workdir, STDOUT), flags, 0o600)
        err = os.open(os.path.join(workdir, STDERR), flags, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=workdir,
                env=process_env(self.runner, extra, cmd.secrets),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as e:
            return None, f"cannot start {argv[0]}: {e.strerror}"
        finally:
            os.close(out)
            os.close(err)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            await kill_process(self.runner, proc.pid, name, proc.wait)
            return None, f"run.sh was killed after its max_runtime of {timeout:g} s"
        except asyncio.CancelledError:
            await kill_process(self.runner, proc.pid, name, proc.wait)
            raise
        return code, f"run.sh exited with code {code}"
