"""Job operations (issue 13): create a job as a one-task workflow, report its states, its
files, cancel and delete it.

A job's files live in the file cache under the job id: inputs as `in/<path>`, outputs as
`out/<path>`. Its runner (the pilot's job mode) holds a token made for that job alone: only
its SHA-256 is stored, the token itself travels in the job's one message (see
`loops/jobs.py`), and it opens nothing but that job's runner routes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

from .. import documents
from ..caller import Caller
from ..config import Config
from ..errors import Invalid, NotFound, Unauthenticated, Unprocessable
from ..job_rules import RUN_SCRIPT, job_request, workflow_body
from ..quotas import QuotaGate
from ..rules import check_job_inputs
from ..storage.base import Change, Storage
from ..storage.files_base import FileStore
from .reads import get_scoped
from .secrets import check_named
from .workflows import create_workflow, deactivate_workflow

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "Queued", "Running", "Completed", "Failed", "Cancelled"
FINISHED = (COMPLETED, FAILED, CANCELLED)
IN, OUT = "in/", "out/"
TOKEN_PREFIX = "ewmsjob_"
RUNNER = "job-runner"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_runner_token() -> tuple[str, str]:
    """A fresh job-scoped token and the digest the store keeps."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


async def create_job(
    store: Storage,
    cfg: Config,
    caller: Caller,
    job_id: str,
    fields: dict[str, str],
    inputs: list[documents.JobFile],
    quotas: QuotaGate,
) -> documents.Job:
    """The job of an upload whose files are already stored under `job_id`."""
    req = job_request(fields, cfg.cluster_locations)
    if RUN_SCRIPT not in {f["path"] for f in inputs}:
        raise Invalid(f"a file part named {RUN_SCRIPT!r} is required (the script the job runs)")
    body = workflow_body(req, task_image=cfg.jobs_task_image, idle_timeout_s=cfg.jobs_pilot_idle_s)
    try:  # the server's limits on what a task may ask for hold for jobs too
        check_job_inputs(body, cfg.job_limits)
    except Invalid as e:
        field = str(e).replace("body.tasks[0].worker_config.", "").split(":")[0]
        name = {"n_cores": "n_cores", "worker_memory": "memory"}.get(field, field)
        raise Invalid(f"form field {name}:{str(e).split(':', 1)[1]}") from None
    try:  # the secrets API's check (create_workflow makes it too), in the form's words
        await check_named(store, caller.subject, req.secrets)
    except Invalid as e:
        raise Invalid(str(e).replace("tasks[].secrets", "form field secrets", 1)) from None
    async with quotas.creating_job(store, caller, cfg.jobs_user_max_active):
        created = await create_workflow(store, cfg.cluster_locations, caller, body)
        job = documents.job(
            job_id=job_id,
            owner=caller.subject,
            workflow_id=created["workflow"]["workflow_id"],
            task_id=created["task_directives"][0]["task_id"],
            cluster_location=req.cluster_location,
            n_cores=req.n_cores,
            memory=req.memory,
            max_runtime=req.max_runtime,
            secrets=list(req.secrets),
            inputs=inputs,
            runner_token_sha256="",
        )
        await store.insert("jobs", [job])
    return job


async def get_job(store: Storage, caller: Caller, job_id: str) -> dict[str, Any]:
    job = await get_scoped(store, "jobs", job_id, caller)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def current_state(store: Storage, job: dict[str, Any]) -> dict[str, Any]:
    """The job as shown: a workflow aborted before the job finished makes it Cancelled."""
    if job["state"] in FINISHED:
        return job
    wf = await store.get("workflows", {"workflow_id": job["workflow_id"]}, projection=["deactivated"])
    if wf is not None and wf["deactivated"] == "ABORTED":
        return {**job, "state": CANCELLED, "message": "the job's workflow was aborted"}
    return job


async def delete_job(store: Storage, files: FileStore, caller: Caller, job_id: str) -> None:
    """Cancel the job if it is still going, then delete its files and itself. The workflow
    is deactivated first: a runner still working loses its token with the document."""
    job = await get_job(store, caller, job_id)
    if job["state"] not in FINISHED:
        await deactivate_workflow(store, job["workflow_id"], "ABORTED", caller)
    await files.delete_namespace(job_id)
    await store.delete_where("jobs", {"job_id": job_id})


async def runner_job(store: Storage, job_id: str, header: str | None) -> dict[str, Any]:
    """The job whose runner token is in `header`; 401 for any other token (a user's too)."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        raise Unauthenticated("this route takes the job's runner token only")
    job = await store.get("jobs", {"job_id": job_id})
    if job is None or not job["runner_token_sha256"]:
        raise Unauthenticated("invalid job runner token")
    if not hmac.compare_digest(job["runner_token_sha256"], token_digest(token)):
        raise Unauthenticated("invalid job runner token")
    return job


def check_runnable(job: dict[str, Any]) -> None:
    if job["state"] in FINISHED:
        raise Unprocessable(f"job {job['job_id']} is {job['state']}: it takes no more reports or files")


async def add_output(store: Storage, job_id: str, entry: documents.JobFile) -> None:
    """Record an uploaded output (a second upload of one path replaces the first)."""
    job = await store.get("jobs", {"job_id": job_id}, projection=["outputs"])
    if job is None:
        raise NotFound(f"no job {job_id}")
    outputs = [o for o in job["outputs"] if o["path"] != entry["path"]] + [entry]
    await store.transition(
        "jobs",
        {"job_id": job_id, "state": {"$in": [QUEUED, RUNNING]}},
        Change(set={"outputs": sorted(outputs, key=lambda o: o["path"])}),
    )


async def report(store: Storage, job: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The runner's report: Running, then Completed or Failed (with the script's exit code).
    A final report finishes the job's workflow, so its pilot is removed."""
    check_runnable(job)
    state, now = body["state"], time.time()
    fields: dict[str, Any] = {"state": state, "message": body.get("message", "")}
    if state == RUNNING:
        fields["started_ts"] = now
    else:
        fields.update(exit_code=body.get("exit_code"), finished_ts=now)
    ok = await store.transition(
        "jobs", {"job_id": job["job_id"], "state": {"$in": [QUEUED, RUNNING]}}, Change(set=fields)
    )
    if not ok:
        raise Unprocessable(f"job {job['job_id']} is already finished")
    if state != RUNNING:
        runner = Caller(subject=job["owner"], role=RUNNER)
        await deactivate_workflow(store, job["workflow_id"], "FINISHED", runner)
    return {**job, **fields}


def working_dir(job: dict[str, Any]) -> list[tuple[str, str, int]]:
    """The finished job's working directory: (path, stored name, size), outputs over inputs."""
    files = {f["path"]: (IN + f["path"], f["size"]) for f in job["inputs"]}
    files.update({f["path"]: (OUT + f["path"], f["size"]) for f in job["outputs"]})
    return [(p, name, size) for p, (name, size) in sorted(files.items())]
