"""Taskforce -> cluster spec: the pilot's environment, its queue-auth file, the submit description."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from . import job_inputs as inputs
from .backends.base import ClusterSpec
from .config import TmsConfig

AUTH_FILE_NAME = "pilot-queue-auth.json"
SECRETS_ENTRY = "ewms_secrets"
"""The auth file's entry (beside the mqids) telling the pilot where and how to fetch its
task's secrets: {"url": …, "token": …}. The values themselves never pass through the TMS."""
EVENT_LOG_NAME = "job-events.log"
TASKFORCE_ATTR = "EWMSTaskforceUUID"


class InvalidTaskforce(ValueError):
    """The taskforce cannot be turned into a cluster (reported to the server as /failed)."""


def taskforce_dir(cfg: TmsConfig, taskforce_uuid: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", taskforce_uuid) or taskforce_uuid.startswith("."):
        raise InvalidTaskforce(f"unsafe taskforce uuid: {taskforce_uuid!r}")
    return os.path.join(cfg.job_event_log_dir, taskforce_uuid)


def auth_payload(directive: dict[str, Any], mqprofiles: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The secrets file's content: credentials of every queue the task reads or writes."""
    by_id = {p["mqid"]: p for p in mqprofiles}
    out = {}
    for mqid in [*directive.get("input_queues", []), *directive.get("output_queues", [])]:
        if mqid not in by_id:
            raise InvalidTaskforce(f"no mq profile for queue {mqid}")
        p = by_id[mqid]
        out[mqid] = {k: p.get(k) for k in ("auth_token", "broker_type", "broker_address")}
    return out


def write_private_file(path: str, content: str) -> None:
    """Write ``content`` readable by the owner only (0600), replacing the file atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def job_environment(
    taskforce: dict[str, Any],
    directive: dict[str, Any],
    *,
    auth_file: str,
    runner: str,
    chirp: str,
    chirp_file: str | None = None,
) -> dict[str, str]:
    """The pilot's environment, per docs/contracts.md section 1. Never contains a secret."""
    env = {str(k): str(v) for k, v in (taskforce.get("pilot_config") or {}).get("environment", {}).items()}
    env.update(
        {
            "EWMS_TASKFORCE_UUID": taskforce["taskforce_uuid"],
            "EWMS_WORKFLOW_ID": taskforce["workflow_id"],
            "EWMS_PILOT_TASK_IMAGE": directive.get("task_image") or "",
            "EWMS_PILOT_TASK_ARGS": directive.get("task_args") or "",
            "EWMS_PILOT_TASK_ENV_JSON": json.dumps(directive.get("task_env") or {}),
            "EWMS_PILOT_QUEUE_INCOMING": ",".join(directive.get("input_queues", [])),
            "EWMS_PILOT_QUEUE_OUTGOING": ",".join(directive.get("output_queues", [])),
            "EWMS_PILOT_QUEUE_AUTH_FILE": auth_file,
            "EWMS_PILOT_RUNNER": runner,
            "EWMS_PILOT_CHIRP": chirp,
        }
    )
    if directive.get("init_image"):
        env["EWMS_PILOT_INIT_IMAGE"] = directive["init_image"]
        env["EWMS_PILOT_INIT_ARGS"] = directive.get("init_args") or ""
        env["EWMS_PILOT_INIT_ENV_JSON"] = json.dumps(directive.get("init_env") or {})
    if chirp_file:
        env["EWMS_PILOT_CHIRP_FILE"] = chirp_file
    return env


def format_environment(env: dict[str, str]) -> str:
    """HTCondor's "new" ``environment`` syntax: the whole string in double quotes, entries
    apart by spaces, a value with whitespace or ' in single quotes with ' doubled, " doubled.
    Raises InvalidTaskforce on what it cannot carry literally (line breaks, macros)."""
    parts = []
    for key, value in env.items():
        try:
            inputs.check_env_name(key, "environment", portable=True)
            inputs.check_submit_text(value, f"environment {key}")
        except inputs.BadInput as e:
            raise InvalidTaskforce(str(e)) from None
        value = value.replace('"', '""')
        if not value or any(c in value for c in " \t'"):
            value = "'" + value.replace("'", "''") + "'"
        parts.append(f"{key}={value}")
    return '"' + " ".join(parts) + '"'


def pilot_image(cfg: TmsConfig, pilot_config: dict[str, Any]) -> str:
    tag = pilot_config.get("tag") or "latest"
    source = pilot_config.get("image_source") or "cvmfs"
    if source in ("cvmfs", "auto"):  # auto: the TMS chooses; CVMFS, as EWMS's TMS does
        return f"{cfg.pilot_image_cvmfs}:{tag}"
    if source in ("docker", "ghcr", "registry"):
        return f"{cfg.pilot_image_docker}:{tag}"
    raise InvalidTaskforce(f"unknown pilot image_source: {source!r}")


def _int(value: Any, field: str, minimum: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidTaskforce(f"{field}: not an integer: {str(value)[:40]!r}") from None
    if n < minimum:
        raise InvalidTaskforce(f"{field} must be >= {minimum}, not {n}")
    return n


def build_spec(
    cfg: TmsConfig,
    taskforce: dict[str, Any],
    directive: dict[str, Any],
    mqprofiles: list[dict[str, Any]],
    *,
    runner: str,
    chirp: str,
    secrets_fetch_token: str | None = None,
) -> tuple[ClusterSpec, dict[str, dict[str, Any]]]:
    """The cluster spec and the secrets to write into its auth file (kept apart on purpose)."""
    uuid = taskforce["taskforce_uuid"]
    wc = taskforce.get("worker_config") or {}
    pc = taskforce.get("pilot_config") or {}
    job_dir = taskforce_dir(cfg, uuid)
    auth_file = os.path.join(job_dir, AUTH_FILE_NAME)
    log_path = os.path.join(job_dir, EVENT_LOG_NAME)
    n_workers = _int(taskforce.get("n_workers"), "n_workers", 1)
    n_cores = _int(wc.get("n_cores", 1), "worker_config.n_cores", 1)
    runtime = _int(wc.get("max_worker_runtime", 24 * 3600), "worker_config.max_worker_runtime", 1)
    try:
        inputs.check_task(directive, pc, wc)
        memory = inputs.parse_size(wc.get("worker_memory", "512M"), field="worker_memory")
        disk = inputs.parse_size(wc.get("worker_disk", "1G"), field="worker_disk")
        reqs = inputs.combine_requirements(cfg.site_requirements, str(wc.get("condor_requirements") or ""))
        transfer = ",".join([auth_file, *pc.get("input_files", [])])
        for field, text in (("transfer_input_files", transfer), ("requirements", reqs)):
            inputs.check_submit_text(text, field)
    except inputs.BadInput as e:
        raise InvalidTaskforce(str(e)) from None
    stdouterr = bool(wc.get("do_transfer_worker_stdouterr", False))
    in_job_auth = AUTH_FILE_NAME if runner != "process" else auth_file  # htcondor transfers it
    env = job_environment(taskforce, directive, auth_file=in_job_auth, runner=runner, chirp=chirp)
    submit = {
        "universe": "container",
        "container_image": pilot_image(cfg, pc),
        "executable": cfg.pilot_executable,
        "transfer_executable": "false",
        "arguments": "",
        "environment": format_environment(env),
        "request_cpus": str(n_cores),
        # whole MiB and KiB with their unit: what HTCondor reads the same way in every version
        "request_memory": f"{math.ceil(memory / inputs.MEMORY_SUBMIT_UNIT)}M",
        "request_disk": f"{math.ceil(disk / inputs.DISK_SUBMIT_UNIT)}K",
        "priority": str(_int(wc.get("priority", 0), "worker_config.priority", 0)),
        "allowed_execute_duration": str(runtime),
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
        "transfer_input_files": transfer,
        "log": log_path,
        "output": os.path.join(job_dir, "$(ProcId).out") if stdouterr else "/dev/null",
        "error": os.path.join(job_dir, "$(ProcId).err") if stdouterr else "/dev/null",
        f"+{TASKFORCE_ATTR}": f'"{uuid}"',
        "+EWMSWorkflowID": f'"{taskforce["workflow_id"]}"',
        "+WantIOProxy": "true",  # condor_chirp
        "job_ad_information_attrs": TASKFORCE_ATTR,
    }
    if reqs:
        submit["requirements"] = reqs
    spec = ClusterSpec(
        taskforce_uuid=uuid,
        n_workers=n_workers,
        submit_dict=submit,
        environment=env,
        job_dir=job_dir,
        job_event_log_fpath=log_path,
        n_cores=n_cores,
        memory_bytes=memory,
        disk_bytes=disk,
        max_runtime=runtime,
        transfer_stdouterr=stdouterr,
    )
    payload = auth_payload(directive, mqprofiles)
    if directive.get("secrets"):
        if not secrets_fetch_token:
            raise InvalidTaskforce(
                "the task names secrets, but the server sent no secrets fetch token "
                "(the server needs EWMS_SECRETS_KEY)"
            )
        base = cfg.server_url_for_pilots or cfg.server_url
        payload[SECRETS_ENTRY] = {"url": f"{base}/v1/pilot/secrets", "token": secrets_fetch_token}
    return spec, payload


def prepare_job_dir(spec: ClusterSpec, secrets: dict[str, dict[str, Any]]) -> str:
    """Create the taskforce's private directory (0700) and its queue-auth file (0600)."""
    os.makedirs(spec.job_dir, mode=0o700, exist_ok=True)
    os.chmod(spec.job_dir, 0o700)
    path = os.path.join(spec.job_dir, AUTH_FILE_NAME)
    write_private_file(path, json.dumps(secrets))
    return path
