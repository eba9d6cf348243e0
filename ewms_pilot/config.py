"""The pilot's settings, read once from its environment (docs/contracts.md, section 1)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field

from .envelope import ENVELOPE, FORMATS

RUNNERS = ("apptainer", "docker", "process")
TASK_MODES = ("per-message", "warm", "job")
CHIRP_MODES = ("htcondor", "file", "none")

SETTINGS_DOCS: tuple[tuple[str, str, str], ...] = (
    ("EWMS_TASKFORCE_UUID", "(none)", "taskforce of this job (used in logs)"),
    ("EWMS_WORKFLOW_ID", "(none)", "workflow of this job (used in logs)"),
    (
        "EWMS_PILOT_TASK_IMAGE",
        "(required)",
        "task container image; with the process runner, the program to run",
    ),
    ("EWMS_PILOT_TASK_ARGS", "''", "task arguments, a shell-style string split with shlex"),
    ("EWMS_PILOT_TASK_ENV_JSON", "{}", "JSON object of extra environment for the task"),
    ("EWMS_PILOT_INIT_IMAGE", "(none)", "optional init command, run once before the first task"),
    ("EWMS_PILOT_INIT_ARGS", "''", "init arguments (shlex)"),
    ("EWMS_PILOT_INIT_ENV_JSON", "{}", "JSON object of extra environment for the init command"),
    ("EWMS_PILOT_INIT_TIMEOUT", "(none)", "seconds the init command may run"),
    ("EWMS_PILOT_QUEUE_INCOMING", "(required)", "comma-separated mqids to consume tasks from"),
    (
        "EWMS_PILOT_QUEUE_OUTGOING",
        "''",
        "comma-separated mqids each task's output is published to (none: output is discarded)",
    ),
    (
        "EWMS_PILOT_QUEUE_AUTH_FILE",
        "(required, unless the six EWMS variables below are set)",
        "JSON {mqid: {auth_token, broker_type, broker_address}}, and ewms_secrets: {url, token} "
        "when the task names secrets (fetched at start, given to each task as EWMS_SECRET_<key>); "
        "must be mode 0600",
    ),
    (
        "EWMS_PILOT_QUEUE_INCOMING_AUTH_TOKEN",
        "(none)",
        "EWMS's job environment, used when EWMS_PILOT_QUEUE_AUTH_FILE is unset: the incoming "
        "queues' token (one, or one per queue separated by ';'); removed from the environment "
        "before any task runs",
    ),
    ("EWMS_PILOT_QUEUE_INCOMING_BROKER_TYPE", "(none)", "EWMS's job environment: e.g. rabbitmq"),
    (
        "EWMS_PILOT_QUEUE_INCOMING_BROKER_ADDRESS",
        "(none)",
        "EWMS's job environment: <user>@<host>:<port>/<vhost> or amqp[s]://…",
    ),
    ("EWMS_PILOT_QUEUE_OUTGOING_AUTH_TOKEN", "(none)", "as above, for the outgoing queues"),
    ("EWMS_PILOT_QUEUE_OUTGOING_BROKER_TYPE", "(none)", "as above, for the outgoing queues"),
    ("EWMS_PILOT_QUEUE_OUTGOING_BROKER_ADDRESS", "(none)", "as above, for the outgoing queues"),
    (
        "EWMS_PILOT_MESSAGE_FORMAT",
        ENVELOPE,
        "envelope: messages are oms-mqclient envelopes (zstd JSON); a task reads their data (text, "
        "or JSON for non-strings) and its UTF-8 output is sent as text | raw: bytes as they are "
        "(binary payloads; set it on every task of the workflow)",
    ),
    ("EWMS_PILOT_RUNNER", "apptainer", "apptainer | docker | process"),
    (
        "EWMS_PILOT_TASK_MODE",
        "per-message",
        "per-message (a fresh task program per message) | warm (the task program starts once "
        "per concurrent task and serves message after message over $EWMS_WARM_SOCKET; "
        "docs/warm-runner.md, ewms_pilot.worker.serve) | job (each message names an EWMS job: "
        "fetch its files from the server, run run.sh with the task program (bash) in a fresh "
        "directory, upload what it made; ewms_pilot/job_runner.py)",
    ),
    (
        "EWMS_PILOT_WARM_START_TIMEOUT",
        "600",
        "with EWMS_PILOT_TASK_MODE=warm: seconds a starting worker (or its container) may take "
        "to connect; past it the task fails and its message is returned",
    ),
    ("EWMS_PILOT_CHIRP", "htcondor", "htcondor (condor_chirp ulog) | file (EWMS_PILOT_CHIRP_FILE) | none"),
    ("EWMS_PILOT_CHIRP_FILE", "(none)", "with EWMS_PILOT_CHIRP=file: file chirp lines go to"),
    (
        "EWMS_PILOT_CHIRP_INTERVAL",
        "30",
        "min seconds between status/count chirps (the final status is always sent)",
    ),
    (
        "EWMS_PILOT_PREFETCH",
        "= max concurrent tasks",
        "unacked messages the broker may hand this pilot per queue",
    ),
    ("EWMS_PILOT_MAX_CONCURRENT_TASKS", "1", "tasks run at the same time"),
    (
        "EWMS_PILOT_TIMEOUT_QUEUE_WAIT_FOR_FIRST_MESSAGE",
        "= EWMS_PILOT_TIMEOUT_QUEUE_INCOMING",
        "seconds to wait for the first message before stopping",
    ),
    (
        "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING",
        "60",
        "idle timeout: stop after this many seconds without a message and with no task running",
    ),
    (
        "EWMS_PILOT_TASK_TIMEOUT",
        "(none)",
        "seconds one task may run; past it the task is killed and counts as failed",
    ),
    (
        "EWMS_PILOT_STOP_GRACE",
        "10",
        "after SIGTERM: seconds in-flight tasks may finish before being killed and returned",
    ),
    (
        "EWMS_PILOT_BROKER_RECONNECT_TIMEOUT",
        "120",
        "seconds to keep reconnecting to an unreachable broker before a FatalError",
    ),
    (
        "EWMS_PILOT_WORK_DIR",
        "$_CONDOR_SCRATCH_DIR or the system temp dir",
        "where per-task temp dirs (EWMS_TASK_INFILE / EWMS_TASK_OUTFILE) are made",
    ),
)


EWMS_QUEUE_VARS = {  # EWMS's per-direction job environment: token, broker type, address
    "incoming": (
        "EWMS_PILOT_QUEUE_INCOMING_AUTH_TOKEN",
        "EWMS_PILOT_QUEUE_INCOMING_BROKER_TYPE",
        "EWMS_PILOT_QUEUE_INCOMING_BROKER_ADDRESS",
    ),
    "outgoing": (
        "EWMS_PILOT_QUEUE_OUTGOING_AUTH_TOKEN",
        "EWMS_PILOT_QUEUE_OUTGOING_BROKER_TYPE",
        "EWMS_PILOT_QUEUE_OUTGOING_BROKER_ADDRESS",
    ),
}
SECRET_VARS = tuple(names[0] for names in EWMS_QUEUE_VARS.values())


class ConfigError(Exception):
    """The environment does not describe a runnable pilot."""


@dataclass(frozen=True)
class Command:
    """A program (or image) with its shell-style args and extra environment; `secrets`
    ({EWMS_SECRET_<key>: value}, the task only) reach it without a command-line flag."""

    image: str
    args: str
    env: dict[str, str]
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class QueueAuth:
    auth_token: str
    broker_type: str
    broker_address: str

    def __repr__(self) -> str:  # never print the token
        return f"QueueAuth(broker_type={self.broker_type!r}, address={self.broker_address!r})"


@dataclass(frozen=True)
class PilotConfig:
    taskforce_uuid: str
    workflow_id: str
    task: Command
    init: Command | None
    init_timeout: float | None
    queues_in: tuple[str, ...]
    queues_out: tuple[str, ...]
    auth_file: str | None
    message_format: str
    runner: str
    task_mode: str
    warm_start_timeout: float
    chirp: str
    chirp_file: str | None
    chirp_interval: float
    prefetch: int
    max_concurrent_tasks: int
    timeout_first_message: float
    timeout_incoming: float
    task_timeout: float | None
    stop_grace: float
    reconnect_timeout: float
    work_dir: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PilotConfig:
        def req(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"{name} is required")
            return value

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = env.get(name, "").strip() or default
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
            return value

        concurrency = _number(env, "EWMS_PILOT_MAX_CONCURRENT_TASKS", 1, int, minimum=1)
        incoming = _number(env, "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING", 60.0, float, minimum=0)
        chirp = choice("EWMS_PILOT_CHIRP", "htcondor", CHIRP_MODES)
        init_image = env.get("EWMS_PILOT_INIT_IMAGE", "").strip()
        return cls(
            taskforce_uuid=env.get("EWMS_TASKFORCE_UUID", ""),
            workflow_id=env.get("EWMS_WORKFLOW_ID", ""),
            task=Command(
                req("EWMS_PILOT_TASK_IMAGE"),
                env.get("EWMS_PILOT_TASK_ARGS", ""),
                _env_json(env, "EWMS_PILOT_TASK_ENV_JSON"),
            ),
            init=Command(
                init_image, env.get("EWMS_PILOT_INIT_ARGS", ""), _env_json(env, "EWMS_PILOT_INIT_ENV_JSON")
            )
            if init_image
            else None,
            init_timeout=_optional_seconds(env, "EWMS_PILOT_INIT_TIMEOUT"),
            queues_in=_mqids(req("EWMS_PILOT_QUEUE_INCOMING")),
            queues_out=_mqids(env.get("EWMS_PILOT_QUEUE_OUTGOING", "")),
            auth_file=env.get("EWMS_PILOT_QUEUE_AUTH_FILE", "").strip()
            or (None if env.get(SECRET_VARS[0], "").strip() else req("EWMS_PILOT_QUEUE_AUTH_FILE")),
            message_format=choice("EWMS_PILOT_MESSAGE_FORMAT", ENVELOPE, FORMATS),
            runner=choice("EWMS_PILOT_RUNNER", "apptainer", RUNNERS),
            task_mode=choice("EWMS_PILOT_TASK_MODE", "per-message", TASK_MODES),
            warm_start_timeout=_number(env, "EWMS_PILOT_WARM_START_TIMEOUT", 600.0, float, minimum=1),
            chirp=chirp,
            chirp_file=req("EWMS_PILOT_CHIRP_FILE") if chirp == "file" else None,
            chirp_interval=_number(env, "EWMS_PILOT_CHIRP_INTERVAL", 30.0, float, minimum=0),
            prefetch=_number(env, "EWMS_PILOT_PREFETCH", concurrency, int, minimum=1),
            max_concurrent_tasks=concurrency,
            timeout_first_message=_number(
                env, "EWMS_PILOT_TIMEOUT_QUEUE_WAIT_FOR_FIRST_MESSAGE", incoming, float, 0
            ),
            timeout_incoming=incoming,
            task_timeout=_optional_seconds(env, "EWMS_PILOT_TASK_TIMEOUT"),
            stop_grace=_number(env, "EWMS_PILOT_STOP_GRACE", 10.0, float, minimum=0),
            reconnect_timeout=_number(env, "EWMS_PILOT_BROKER_RECONNECT_TIMEOUT", 120.0, float, minimum=0),
            work_dir=env.get("EWMS_PILOT_WORK_DIR", "").strip()
            or env.get("_CONDOR_SCRATCH_DIR", "").strip()
            or tempfile.gettempdir(),
        )


def load_auth(path: str, mqids: tuple[str, ...]) -> dict[str, QueueAuth]:
    """Read the queue credentials; refuse a file others could read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ConfigError(f"cannot read EWMS_PILOT_QUEUE_AUTH_FILE {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"EWMS_PILOT_QUEUE_AUTH_FILE {path} has mode {stat.S_IMODE(mode):04o}; it holds "
            "queue secrets and must be accessible by its owner only (chmod 600)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"EWMS_PILOT_QUEUE_AUTH_FILE {path} is not valid JSON: {type(e).__name__}"
        ) from None  # the message could quote a token
    out: dict[str, QueueAuth] = {}
    for mqid in mqids:
        entry = raw.get(mqid) if isinstance(raw, dict) else None
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry[k]
            for k in ("auth_token", "broker_type", "broker_address")
        ):
            raise ConfigError(f"EWMS_PILOT_QUEUE_AUTH_FILE has no complete entry for {mqid}")
        out[mqid] = QueueAuth(entry["auth_token"], entry["broker_type"], entry["broker_address"])
    return out


def queue_auth(cfg: PilotConfig, env: Mapping[str, str]) -> dict[str, QueueAuth]:
    """The credentials of every queue: from the 0600 file (our TMS), else from EWMS's
    per-direction variables (EWMS's TMS puts them in the job environment)."""
    mqids = tuple(dict.fromkeys(cfg.queues_in + cfg.queues_out))
    if cfg.auth_file is not None:
        return load_auth(cfg.auth_file, mqids)
    out: dict[str, QueueAuth] = {}
    for direction, queues in (("incoming", cfg.queues_in), ("outgoing", cfg.queues_out)):
        if queues:
            token, broker_type, address = (
                _per_queue(env, name, len(queues)) for name in EWMS_QUEUE_VARS[direction]
            )
            for i, mqid in enumerate(queues):
                out[mqid] = QueueAuth(token[i], broker_type[i], address[i])
    return out


def _per_queue(env: Mapping[str, str], name: str, n: int) -> list[str]:
    """One value for all `n` queues of a direction, or `n` values separated by ';' (EWMS's TMS
    joins its lists so). Never quotes the value: it may be a token."""
    raw = env.get(name, "").strip()
    values = [v.strip() for v in raw.split(";")] if n > 1 else [raw]
    if not all(values):
        raise ConfigError(f"{name} is required when EWMS_PILOT_QUEUE_AUTH_FILE is unset")
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ConfigError(f"{name} has {len(values)} values for {n} queues")
    return values


def _mqids(value: str) -> tuple[str, ...]:
    """Comma-separated (our TMS) or ';'-separated (EWMS's TMS)."""
    return tuple(m.strip() for m in value.replace(";", ",").split(",") if m.strip())


def _env_json(env: Mapping[str, str], name: str) -> dict[str, str]:
    raw = env.get(name, "").strip() or "{}"
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError(f"{name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _number(env: Mapping[str, str], name: str, default, kind, minimum=None):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}")
    return value


def _optional_seconds(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "none", "0"):
        return None
    return _number(env, name, None, float, minimum=0)
