"""The routes a job's runner (the pilot in job mode) calls with the token made for that one
job: its inputs, its outputs, its status. No user token opens them, and the runner token
opens nothing else (ops/jobs.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..caller import Caller
from ..errors import NotFound, Unauthenticated
from ..job_rules import check_path
from ..ops import jobs as ops
from ..storage.files_base import FileMissing, FileWriter
from .base import BaseHandler
from .file_streams import UploadHandler, send_file

RUNNER = frozenset({ops.RUNNER})


class _RunnerHandler(BaseHandler):
    job: dict[str, object]

    async def identify(self, method: str, roles: frozenset[str]) -> Caller:
        header = self.request.headers.get("Authorization")
        try:
            self.job = await ops.runner_job(self.deps.store, self.path_kwargs["job_id"], header)
        except Unauthenticated:
            with contextlib.suppress(Unauthenticated):  # a user's or TMS's token: name it in the log
                self.caller = await self.deps.auth.authenticate(header)
            raise
        return Caller(subject=str(self.job["owner"]), role=ops.RUNNER)


class JobIDRunnerInputsHandler(_RunnerHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)/runner/inputs"
    OPENAPI_PATH = "/v1/jobs/{job_id}/runner/inputs"
    ROLES = {"GET": RUNNER}

    async def get(self, job_id: str) -> None:
        self.send({"id": job_id, "files": self.job["inputs"], "max_runtime": self.job["max_runtime"]})


class JobIDRunnerInputsIDHandler(_RunnerHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)/runner/inputs/(?P<path>.+)"
    OPENAPI_PATH = "/v1/jobs/{job_id}/runner/inputs/{path}"
    ROLES = {"GET": RUNNER}

    async def get(self, job_id: str, path: str) -> None:
        inputs = self.job["inputs"]
        assert isinstance(inputs, list) and self.deps.files is not None
        entry = next((f for f in inputs if f["path"] == path), None)
        if entry is None:
            raise NotFound(f"job {job_id} has no input file {path!r}")
        chunks = self.deps.files.read(job_id, ops.IN + path)
        try:
            first = await anext(chunks, b"")
        except FileMissing:
            raise NotFound(f"job {job_id} has no input file {path!r}") from None

        async def whole() -> AsyncIterator[bytes]:
            yield first
            async for c in chunks:
                yield c

        await send_file(self, whole(), "application/octet-stream", entry["size"])


class JobIDRunnerOutputsIDHandler(_RunnerHandler, UploadHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)/runner/outputs/(?P<path>.+)"
    OPENAPI_PATH = "/v1/jobs/{job_id}/runner/outputs/{path}"
    ROLES = {"PUT": RUNNER}
    UPLOAD_METHOD = "PUT"
    MAX_BODY_SETTING = "jobs_max_upload_bytes"

    async def authorize(self) -> None:
        ops.check_runnable(self.job)
        self._path = check_path(self.path_kwargs["path"])
        self._writer: FileWriter = self.files.writer(str(self.job["job_id"]), ops.OUT + self._path)

    async def on_chunk(self, chunk: bytes) -> None:
        await self._writer.write(chunk)

    async def cleanup(self) -> None:
        await self._writer.abort()

    async def put(self, job_id: str, path: str) -> None:
        try:
            stored = await self._writer.commit()
            entry = {"path": self._path, "size": stored.size, "sha256": stored.sha256}
            await ops.add_output(self.deps.store, job_id, entry)  # type: ignore[arg-type]
        except BaseException:
            await self._writer.abort()
            raise
        self._ok = True
        self.send(entry)


class JobIDRunnerStatusHandler(_RunnerHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)/runner/status"
    OPENAPI_PATH = "/v1/jobs/{job_id}/runner/status"
    ROLES = {"POST": RUNNER}

    async def post(self, job_id: str) -> None:
        job = await ops.report(self.deps.store, self.job, self.body())
        self.deps.wake("mq_activation")
        self.send({"id": job_id, "status": job["state"]})
