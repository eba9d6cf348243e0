"""TMS settings, read from the environment once in ``main`` (never at import)."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: its name, parser, default and meaning."""

    env: str
    field: str
    parse: Callable[[str], Any]
    default: Any
    help: str


def _bool(value: str) -> bool:
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _backend(value: str) -> str:
    if value not in ("htcondor", "local"):
        raise ValueError(f"must be 'htcondor' or 'local', not {value!r}")
    return value


def _level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, not {value!r}")
    return value.upper()


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http:// or https:// URL, not {value[:80]!r}")
    return value.rstrip("/")


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return number


def _requirements(value: str) -> str:
    from .job_inputs import BadInput, parse_requirements

    try:
        return parse_requirements(value, "expression")
    except BadInput as e:
        raise ValueError(str(e)) from None


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"expected a port number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"must be 0-65535, got {value!r}")
    return port


def _uid_range(value: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("-")
    try:
        first, last = int(lo), int(hi)
    except ValueError:
        raise ValueError(f"expected FIRST-LAST (e.g. 200000-299999), got {value!r}") from None
    if not (sep and 1000 <= first <= last < 2**32 - 1):
        raise ValueError(f"expected FIRST-LAST with 1000 <= FIRST <= LAST, got {value!r}")
    return first, last


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if bad := [n for n in names if n.upper().startswith("EWMS_")]:
        raise ValueError(f"{', '.join(bad)}: EWMS_* settings (the TMS token...) never reach jobs")
    return names


_HOST = "<this host's name>"
_STATE_DIR = "/var/lib/ewms-tms/jobs as root, else $XDG_STATE_HOME/ewms-tms/jobs (~/.local/state/...)"

SETTINGS: tuple[Setting, ...] = (
    Setting("EWMS_TMS_SERVER_URL", "server_url", _url, None, "base URL of ewms_server"),
    Setting("EWMS_TMS_TOKEN", "token", str, None, "bearer token with role system-tms (never logged)"),
    Setting(
        "EWMS_TMS_SERVER_URL_FOR_PILOTS",
        "server_url_for_pilots",
        _url,
        "",
        "base URL of ewms_server as the pilots reach it, to fetch their task's secrets "
        "(default: EWMS_TMS_SERVER_URL)",
    ),
    Setting(
        "EWMS_TMS_SCHEDD", "schedd", str, _HOST, "schedd this TMS serves; taskforces are polled by this name"
    ),
    Setting(
        "EWMS_TMS_JOB_EVENT_LOG_DIR",
        "job_event_log_dir",
        str,
        _STATE_DIR,
        "directory of per-taskforce directories (job event log, queue-auth file, job output); "
        "with the local backend's per-taskforce users, every directory above it must be "
        "searchable by others (o+x)",
    ),
    Setting(
        "EWMS_TMS_BACKEND",
        "backend",
        _backend,
        "htcondor",
        "'htcondor' (htcondor2 bindings) or 'local' (processes here)",
    ),
    Setting(
        "EWMS_TMS_STARTER_INTERVAL",
        "starter_interval",
        _positive,
        0.5,
        "seconds between pending-starter polls while idle (polls again at once after finding work)",
    ),
    Setting(
        "EWMS_TMS_STOPPER_INTERVAL",
        "stopper_interval",
        _positive,
        2.0,
        "seconds between pending-stopper polls while idle",
    ),
    Setting(
        "EWMS_TMS_WATCHER_INTERVAL",
        "watcher_interval",
        _positive,
        2.0,
        "seconds between passes over the job event logs",
    ),
    Setting(
        "EWMS_TMS_TRACKER_INTERVAL",
        "tracker_interval",
        _positive,
        60.0,
        "seconds between re-reading from the server which clusters this schedd must watch",
    ),
    Setting(
        "EWMS_TMS_HOUSEKEEPING_INTERVAL",
        "housekeeping_interval",
        _positive,
        3600.0,
        "seconds between housekeeping passes",
    ),
    Setting(
        "EWMS_TMS_COMPRESS_AFTER",
        "compress_after",
        _positive,
        3 * 86400.0,
        "age (s) after which a finished taskforce's event log is gzip-compressed",
    ),
    Setting(
        "EWMS_TMS_DELETE_AFTER",
        "delete_after",
        _positive,
        14 * 86400.0,
        "age (s) after which a finished taskforce's directory is deleted",
    ),
    Setting(
        "EWMS_TMS_HOLD_MAX_RELEASES",
        "hold_max_releases",
        _count,
        2,
        "times a held job is released before it is removed (0: remove at once)",
    ),
    Setting(
        "EWMS_TMS_HOLD_RELEASE_DELAY",
        "hold_release_delay",
        _positive,
        60.0,
        "seconds a job stays held before the hold policy acts on it",
    ),
    Setting(
        "EWMS_TMS_DIAGNOSIS_INTERVAL",
        "diagnosis_interval",
        _positive,
        60.0,
        "seconds between asking the backend why idle jobs are idle (htcondor: one schedd query "
        "for all idle EWMS jobs); the diagnosis goes to the server with the statuses",
    ),
    Setting(
        "EWMS_TMS_METRICS_PORT",
        "metrics_port",
        _port,
        "",
        "port of a Prometheus metrics endpoint (clusters, jobs by state, watcher lag, submit and "
        "remove failures); unset: no endpoint; 0: any free port (logged)",
    ),
    Setting(
        "EWMS_TMS_METRICS_HOST",
        "metrics_host",
        str,
        "127.0.0.1",
        "address the metrics endpoint listens on (0.0.0.0 for a scraper on another machine)",
    ),
    Setting(
        "EWMS_TMS_BACKOFF_MAX",
        "backoff_max",
        _positive,
        60.0,
        "longest wait (s) between retries while the server is down",
    ),
    Setting(
        "EWMS_TMS_REQUEST_TIMEOUT", "request_timeout", _positive, 30.0, "timeout (s) of one REST request"
    ),
    Setting(
        "EWMS_TMS_SITE_REQUIREMENTS",
        "site_requirements",
        _requirements,
        "",
        "HTCondor requirements every job gets (a ClassAd expression), combined with a "
        "taskforce's condor_requirements as (site) && (taskforce)",
    ),
    Setting(
        "EWMS_TMS_PILOT_IMAGE_CVMFS",
        "pilot_image_cvmfs",
        str,
        "/cvmfs/icecube.opensciencegrid.org/containers/ewms/observation-management-with-ewms/ewms-pilot",
        "pilot image path for image_source=cvmfs (':<tag>' appended)",
    ),
    Setting(
        "EWMS_TMS_PILOT_IMAGE_DOCKER",
        "pilot_image_docker",
        str,
        "docker://ghcr.io/observation-management-service/ewms-pilot",
        "pilot image for image_source=docker (':<tag>' appended)",
    ),
    Setting(
        "EWMS_TMS_PILOT_EXECUTABLE",
        "pilot_executable",
        str,
        "ewms-pilot",
        "pilot command inside the job's container",
    ),
    Setting(
        "EWMS_TMS_PILOT_RUNNER",
        "pilot_runner",
        str,
        "apptainer",
        "EWMS_PILOT_RUNNER given to htcondor jobs (local jobs always use 'process')",
    ),
    Setting(
        "EWMS_TMS_LOCAL_JOB_COMMAND",
        "local_job_command",
        str,
        "ewms-pilot",
        "local backend: command each job runs (shell-style string); with per-taskforce users "
        "it must be runnable by any user (e.g. a venv made by resources/pilot-venv.sh)",
    ),
    Setting(
        "EWMS_TMS_LOCAL_UID_RANGE",
        "local_uid_range",
        _uid_range,
        (200000, 299999),
        "local backend, TMS with root or CAP_SETUID+CAP_SETGID+CAP_CHOWN: uids (and gids) given "
        "to taskforces, one each, never two running taskforces at once; give each TMS on a "
        "machine its own range",
    ),
    Setting(
        "EWMS_TMS_LOCAL_SINGLE_TENANT",
        "local_single_tenant",
        _bool,
        False,
        "local backend: true runs every job as this TMS's own user, so any task can read any "
        "other's queue credentials -- only when all tasks are trusted alike. Required when the "
        "TMS cannot switch users",
    ),
    Setting(
        "EWMS_TMS_LOCAL_PASS_ENV",
        "local_pass_env",
        _names,
        ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH"),
        "local backend: the only variables of the TMS's environment its supervisors and jobs "
        "get (comma-separated; never an EWMS_* setting)",
    ),
    Setting(
        "EWMS_TMS_LOCAL_STATE_DIR",
        "local_state_dir",
        str,
        "",
        "local backend: where its clusters are recorded (default: <job event log dir>/.local-schedd)",
    ),
    Setting(
        "EWMS_TMS_LOG_LEVEL", "log_level", _level, "INFO", "logging level: DEBUG, INFO, WARNING or ERROR"
    ),
)


@dataclasses.dataclass(frozen=True)
class TmsConfig:
    """All settings of one TMS process."""

    server_url: str
    token: str
    schedd: str
    job_event_log_dir: str
    server_url_for_pilots: str = ""
    backend: str = "htcondor"
    starter_interval: float = 0.5
    stopper_interval: float = 2.0
    watcher_interval: float = 2.0
    tracker_interval: float = 60.0
    housekeeping_interval: float = 3600.0
    compress_after: float = 3 * 86400.0
    delete_after: float = 14 * 86400.0
    hold_max_releases: int = 2
    hold_release_delay: float = 60.0
    diagnosis_interval: float = 60.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    backoff_max: float = 60.0
    request_timeout: float = 30.0
    site_requirements: str = ""
    pilot_image_cvmfs: str = ""
    pilot_image_docker: str = ""
    pilot_executable: str = "ewms-pilot"
    pilot_runner: str = "apptainer"
    local_job_command: str = "ewms-pilot"
    local_uid_range: tuple[int, int] = (200000, 299999)
    local_single_tenant: bool = False
    local_pass_env: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
    local_state_dir: str = ""
    log_level: str = "INFO"

    def __repr__(self) -> str:  # keep the token out of any log line
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["token"] = "***"
        return f"TmsConfig({fields})"

    __str__ = __repr__


class ConfigError(ValueError):
    """A setting is missing or malformed."""


def default_job_dir(environ: Mapping[str, str]) -> str:
    """Absolute, wherever the TMS is started: root's under /var/lib, a user's XDG state dir."""
    if os.geteuid() == 0:
        return "/var/lib/ewms-tms/jobs"
    state = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(os.path.abspath(state), "ewms-tms", "jobs")


def from_env(environ: Mapping[str, str] | None = None) -> TmsConfig:
    """Build the config from ``environ`` (default: ``os.environ``); a ConfigError names every
    missing or malformed setting at once."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for s in SETTINGS:
        raw = environ.get(s.env)
        if raw is None or raw == "":
            if s.default is None:
                problems.append(f"{s.env} is required")
            elif s.default is _HOST:
                values[s.field] = socket.gethostname()
            elif s.default is _STATE_DIR:
                values[s.field] = default_job_dir(environ)
            else:
                values[s.field] = s.default
            continue
        try:
            values[s.field] = s.parse(raw)
        except ValueError as e:
            problems.append(f"{s.env}: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    values["job_event_log_dir"] = os.path.abspath(values["job_event_log_dir"])
    if values["metrics_port"] == "":
        values["metrics_port"] = None
    values["server_url_for_pilots"] = values["server_url_for_pilots"] or values.get("server_url", "")
    if not values["local_state_dir"]:
        values["local_state_dir"] = os.path.join(values["job_event_log_dir"], ".local-schedd")
    return TmsConfig(**values)


def _shown(default: Any) -> str:
    if default is None:
        return "required"
    if default == "":
        return "default: unset"
    if isinstance(default, tuple) and all(isinstance(d, str) for d in default):
        return f"default: {','.join(default)}"
    if isinstance(default, tuple):
        return f"default: {'-'.join(str(d) for d in default)}"
    if isinstance(default, bool):
        return f"default: {str(default).lower()}"
    return f"default: {default}"


def help_text() -> str:
    """The settings table shown by ``--help``."""
    lines = ["settings (environment variables):"]
    for s in SETTINGS:
        lines.append(f"  {s.env}\n      {s.help} ({_shown(s.default)})")
    return "\n".join(lines)
