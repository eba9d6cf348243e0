"""Routes under /v1/jobs: a script and its files in, a zip of the working directory out
(issue 13). The upload streams into the file cache as it arrives (file_streams.py)."""

from __future__ import annotations

from typing import Any

from .. import documents
from ..errors import Invalid, NotFound, Unavailable
from ..ids import new_id
from ..job_rules import FORM_FIELDS, MAX_FIELD_BYTES, MAX_FILES, check_path, parse_secrets
from ..multipart import MultipartError, MultipartParser, PartEnd, PartStart, boundary_of
from ..ops import jobs as ops
from ..storage.files_base import FileMissing, FileWriter
from ..zipstream import zip_length, zip_stream
from .base import USERS, BaseHandler
from .file_streams import UploadHandler, send_file
from .secrets import NO_KEY


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as its owner sees it (never its runner token's digest)."""
    return {
        "id": job["job_id"],
        "status": job["state"],
        "message": job["message"],
        "exit_code": job["exit_code"],
        "owner": job["owner"],
        "workflow_id": job["workflow_id"],
        "created": job["timestamp"],
        "started": job["started_ts"],
        "finished": job["finished_ts"],
        "cluster_location": job["cluster_location"],
        "n_cores": job["n_cores"],
        "memory": job["memory"],
        "max_runtime": job["max_runtime"],
        "secrets": job["secrets"],
        "inputs": job["inputs"],
        "outputs": job["outputs"],
        "files_deleted": job["files_deleted"],
    }


class JobsHandler(UploadHandler):
    ROUTE = r"/v1/jobs"
    OPENAPI_PATH = "/v1/jobs"
    ROLES = {"GET": USERS, "POST": USERS}
    MAX_BODY_SETTING = "jobs_max_upload_bytes"

    async def authorize(self) -> None:
        if self.request.method != "POST":
            return
        try:  # refused before a byte of the upload is read
            self._parser = MultipartParser(boundary_of(self.request.headers.get("Content-Type")))
        except MultipartError as e:
            raise Invalid(str(e)) from None
        await self.deps.quotas.check_active_jobs(
            self.deps.store, self.caller, self.deps.cfg.jobs_user_max_active
        )
        self._job_id = new_id("JB")
        self._fields: dict[str, str] = {}
        self._field: tuple[str, bytearray] | None = None
        self._writer: FileWriter | None = None
        self._path = ""
        self._inputs: list[documents.JobFile] = []

    async def get(self) -> None:
        jobs = await self.deps.store.find("jobs", self.caller.scope(), sort=[("job_id", 1)])
        shown = [await ops.current_state(self.deps.store, j) for j in jobs]
        self.send({"jobs": [job_view(j) for j in shown]})

    async def on_chunk(self, chunk: bytes) -> None:
        try:
            events = self._parser.feed(chunk)
        except MultipartError as e:
            raise Invalid(f"body: {e}") from None
        for ev in events:
            if isinstance(ev, bytes):
                await self._data(ev)
            elif isinstance(ev, PartStart):
                await self._start(ev)
            else:
                assert isinstance(ev, PartEnd)
                await self._end()

    async def _start(self, part: PartStart) -> None:
        if part.name == "file":
            path = check_path(part.filename)
            if path in {f["path"] for f in self._inputs}:
                raise Invalid(f"file {path!r} is given twice")
            if len(self._inputs) >= MAX_FILES:
                raise Invalid(f"more than {MAX_FILES} files")
            self._path = path
            self._writer = self.files.writer(self._job_id, ops.IN + path)
        elif part.name in FORM_FIELDS:
            if part.name in self._fields:
                raise Invalid(f"form field {part.name} is given twice")
            self._field = (part.name, bytearray())
        else:
            raise Invalid(f"unknown form field {part.name[:80]!r} (known: file, {', '.join(FORM_FIELDS)})")

    async def _data(self, data: bytes) -> None:
        if self._writer is not None:
            await self._writer.write(data)
        elif self._field is not None:
            self._field[1].extend(data)
            if len(self._field[1]) > MAX_FIELD_BYTES:
                raise Invalid(f"form field {self._field[0]}: longer than {MAX_FIELD_BYTES} bytes")

    async def _end(self) -> None:
        if self._writer is not None:
            stored = await self._writer.commit()
            self._inputs.append(documents.JobFile(path=self._path, size=stored.size, sha256=stored.sha256))
            self._writer = None
        elif self._field is not None:
            name, raw = self._field
            try:
                self._fields[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Invalid(f"form field {name}: not UTF-8") from None
            self._field = None

    async def cleanup(self) -> None:
        if self._writer is not None:
            await self._writer.abort()
        await self.files.delete_namespace(self._job_id)

    async def post(self) -> None:
        try:
            try:
                self._parser.close()
            except MultipartError as e:
                raise Invalid(f"body: {e}") from None
            if self.deps.secrets_box is None and parse_secrets(self._fields.get("secrets", "")):
                raise Unavailable(f"form field secrets names secrets, but {NO_KEY}")
            job = await ops.create_job(
                self.deps.store,
                self.deps.cfg,
                self.caller,
                self._job_id,
                self._fields,
                self._inputs,
                self.deps.quotas,
            )
        except BaseException:
            await self.cleanup()
            raise
        self._ok = True
        self.deps.wake("mq_activation")
        self.deps.wake("jobs")
        self.send({"id": job["job_id"], "status": job["state"], "message": job["message"]}, 201)


class JobIDHandler(BaseHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)"
    OPENAPI_PATH = "/v1/jobs/{job_id}"
    ROLES = {"GET": USERS, "DELETE": USERS}

    async def get(self, job_id: str) -> None:
        job = await ops.current_state(
            self.deps.store, await ops.get_job(self.deps.store, self.caller, job_id)
        )
        if self.query.get("format") == "json" or job["state"] not in ops.FINISHED or job["files_deleted"]:
            self.send(job_view(job))
            return
        files = self.deps.files
        assert files is not None
        entries = ops.working_dir(job)
        names = {path: name for path, name, _ in entries}
        sizes = [(p, size) for p, _, size in entries]
        self.set_header("Content-Disposition", f'attachment; filename="{job_id}.zip"')
        await send_file(
            self,
            zip_stream(sizes, lambda p: files.read(job_id, names[p])),
            "application/zip",
            await zip_length(sizes),
        )

    async def delete(self, job_id: str) -> None:
        assert self.deps.files is not None
        await ops.delete_job(self.deps.store, self.deps.files, self.caller, job_id)
        self.deps.wake("mq_activation")
        self.send({"id": job_id, "deleted": True})


class JobIDFilesHandler(BaseHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)/files"
    OPENAPI_PATH = "/v1/jobs/{job_id}/files"
    ROLES = {"GET": USERS}

    async def get(self, job_id: str) -> None:
        job = await ops.get_job(self.deps.store, self.caller, job_id)
        self.send({"id": job_id, "files": job["outputs"], "files_deleted": job["files_deleted"]})


class JobIDFilesIDHandler(BaseHandler):
    ROUTE = r"/v1/jobs/(?P<job_id>[^/]+)/files/(?P<path>.+)"
    OPENAPI_PATH = "/v1/jobs/{job_id}/files/{path}"
    ROLES = {"GET": USERS}

    async def get(self, job_id: str, path: str) -> None:
        job = await ops.get_job(self.deps.store, self.caller, job_id)
        entry = next((f for f in job["outputs"] if f["path"] == path), None)
        if entry is None or job["files_deleted"]:
            raise NotFound(f"job {job_id} has no output file {path!r}")
        assert self.deps.files is not None
        try:
            chunks = self.deps.files.read(job_id, ops.OUT + path)
            first = await anext(chunks, b"")
        except FileMissing:
            raise NotFound(f"job {job_id} has no output file {path!r}") from None

        async def whole() -> Any:
            yield first
            async for c in chunks:
                yield c

        await send_file(self, whole(), "application/octet-stream", entry["size"])
