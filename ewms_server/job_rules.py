"""What a job request may contain, as pure functions: file names, form fields, secret keys,
and the one-task workflow a job becomes (issue 13)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import Invalid

RUN_SCRIPT = "run.sh"
FORM_FIELDS = ("cluster_location", "n_cores", "memory", "max_runtime", "secrets")
MAX_FILES = 1000
MAX_FIELD_BYTES = 4096
MAX_PATH_CHARS = 1024
SECRET_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""A secret's key (the secrets API's; the task sees it as EWMS_SECRET_<KEY>)."""
QUEUE_IN, QUEUE_OUT = "job-in", "job-out"
JOB_ENV = {
    "EWMS_PILOT_TASK_MODE": "job",
    "EWMS_PILOT_MESSAGE_FORMAT": "raw",
    "EWMS_PILOT_PREFETCH": "1",
}
"""The pilot's settings for a job's one taskforce (ewms_pilot/job_runner.py)."""


def check_path(name: str | None) -> str:
    """A file part's name as a relative path inside the job's working directory; 400 unless
    it is one: not empty, no NUL or control character, not absolute, no backslash, no empty,
    '.' or '..' part."""
    if not name:
        raise Invalid("a file part has no filename")
    if len(name) > MAX_PATH_CHARS:
        raise Invalid(f"file name longer than {MAX_PATH_CHARS} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise Invalid(f"file name {name!r}: NUL and control characters are not allowed")
    if "\\" in name:
        raise Invalid(f"file name {name!r}: use '/' to separate directories")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise Invalid(f"file name {name!r}: must be a relative path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Invalid(f"file name {name!r}: no empty, '.' or '..' path parts")
    if any(len(p.encode()) > 255 for p in parts):
        raise Invalid(f"file name {name!r}: a path part is longer than 255 bytes")
    return name


def parse_secrets(raw: str) -> list[str]:
    """`KEY1,KEY2` -> keys, each matching SECRET_KEY, without repeats; 400 otherwise."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for k in keys:
        if not SECRET_KEY.fullmatch(k):
            raise Invalid(f"form field secrets: {k[:80]!r} is not a secret key ({SECRET_KEY.pattern})")
    return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class JobRequest:
    cluster_location: str
    n_cores: int
    memory: str
    max_runtime: int
    secrets: tuple[str, ...]


def _int(fields: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = fields.get(name, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        raise Invalid(f"form field {name}: expected a whole number, got {raw[:40]!r}")
    value = int(raw)
    if not lo <= value <= hi:
        raise Invalid(f"form field {name}: must be {lo}-{hi}, got {value}")
    return value


def job_request(fields: Mapping[str, str], locations: Mapping[str, Any]) -> JobRequest:
    """The form fields of POST /v1/jobs, checked; every one optional."""
    location = fields.get("cluster_location", "").strip() or next(iter(locations))
    if location not in locations:
        raise Invalid(f"form field cluster_location: unknown location {location[:80]!r}")
    memory = fields.get("memory", "").strip() or "1G"
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*([KMGT]i?B?|[kmgt]i?b?|B|b)?", memory) or len(memory) > 32:
        raise Invalid(f"form field memory: expected a size like 512M or 2G, got {memory[:40]!r}")
    return JobRequest(
        cluster_location=location,
        n_cores=_int(fields, "n_cores", 1, 1, 1024),
        memory=memory,
        max_runtime=_int(fields, "max_runtime", 3600, 1, 2592000),
        secrets=tuple(parse_secrets(fields.get("secrets", ""))),
    )


def workflow_body(req: JobRequest, *, task_image: str, idle_timeout_s: float) -> dict[str, Any]:
    """The one-task workflow a job runs as: one pilot, one message in, its result out. The
    worker may run the script's max_runtime plus transfers; the pilot leaves once idle."""
    task: dict[str, Any] = {
        "cluster_locations": [req.cluster_location],
        "task_image": task_image,
        "task_args": RUN_SCRIPT,
        "n_workers": 1,
        "input_queue_aliases": [QUEUE_IN],
        "output_queue_aliases": [QUEUE_OUT],
        "pilot_config": {
            "tag": "latest",
            "image_source": "cvmfs",
            "environment": {
                **JOB_ENV,
                "EWMS_PILOT_TASK_TIMEOUT": str(req.max_runtime),
                "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": f"{idle_timeout_s:g}",
            },
            "input_files": [],
        },
        "worker_config": {
            "do_transfer_worker_stdouterr": False,
            "max_worker_runtime": min(req.max_runtime + 3600, 2592000),
            "n_cores": req.n_cores,
            "priority": 50,
            "worker_disk": "1G",
            "worker_memory": req.memory,
            "condor_requirements": "",
        },
    }
    if req.secrets:  # the secrets API delivers them as EWMS_SECRET_<KEY>
        task["secrets"] = list(req.secrets)
    return {"tasks": [task]}
