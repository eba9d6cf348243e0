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
        raise ValueError(f"EWMS_TMS_BACKEND must be 'htcondor' or 'local', not {value!r}")
    return value


_HOST = "<this host's name>"

SETTINGS: tuple[Setting, ...] = (
    Setting("EWMS_TMS_SERVER_URL", "server_url", str, None, "base URL of ewms_server"),
    Setting("EWMS_TMS_TOKEN", "token", str, None, "bearer token with role system-tms (never logged)"),
    Setting(
        "EWMS_TMS_SCHEDD", "schedd", str, _HOST, "schedd this TMS serves; taskforces are polled by this name"
    ),
    Setting(
        "EWMS_TMS_JOB_EVENT_LOG_DIR",
        "job_event_log_dir",
        str,
        "./ewms-tms-jobs",
        "directory of per-taskforce directories (job event log, queue-auth file, job output)",
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
        float,
        0.5,
        "seconds between pending-starter polls while idle (polls again at once after finding work)",
    ),
    Setting(
        "EWMS_TMS_STOPPER_INTERVAL",
        "stopper_interval",
        float,
        2.0,
        "seconds between pending-stopper polls while idle",
    ),
    Setting(
        "EWMS_TMS_WATCHER_INTERVAL",
        "watcher_interval",
        float,
        2.0,
        "seconds between passes over the job event logs",
    ),
    Setting(
        "EWMS_TMS_TRACKER_INTERVAL",
        "tracker_interval",
        float,
        60.0,
        "seconds between re-reading from the server which clusters this schedd must watch",
    ),
    Setting(
        "EWMS_TMS_HOUSEKEEPING_INTERVAL",
        "housekeeping_interval",
        float,
        3600.0,
        "seconds between housekeeping passes",
    ),
    Setting(
        "EWMS_TMS_COMPRESS_AFTER",
        "compress_after",
        float,
        3 * 86400.0,
        "age (s) after which a finished taskforce's event log is gzip-compressed",
    ),
    Setting(
        "EWMS_TMS_DELETE_AFTER",
        "delete_after",
        float,
        14 * 86400.0,
        "age (s) after which a finished taskforce's directory is deleted",
    ),
    Setting(
        "EWMS_TMS_HOLD_MAX_RELEASES",
        "hold_max_releases",
        int,
        2,
        "times a held job is released before it is removed (0: remove at once)",
    ),
    Setting(
        "EWMS_TMS_HOLD_RELEASE_DELAY",
        "hold_release_delay",
        float,
        60.0,
        "seconds a job stays held before the hold policy acts on it",
    ),
    Setting(
        "EWMS_TMS_BACKOFF_MAX",
        "backoff_max",
        float,
        60.0,
        "longest wait (s) between retries while the server is down",
    ),
    Setting("EWMS_TMS_REQUEST_TIMEOUT", "request_timeout", float, 30.0, "timeout (s) of one REST request"),
    Setting(
        "EWMS_TMS_SITE_REQUIREMENTS",
        "site_requirements",
        str,
        "",
        "HTCondor requirements every job gets, and-ed with the taskforce's condor_requirements",
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
        "local backend: command each job runs (shell-style string)",
    ),
    Setting(
        "EWMS_TMS_LOCAL_STATE_DIR",
        "local_state_dir",
        str,
        "",
        "local backend: where its clusters are recorded (default: <job event log dir>/.local-schedd)",
    ),
    Setting("EWMS_TMS_LOG_LEVEL", "log_level", str, "INFO", "logging level"),
)


@dataclasses.dataclass(frozen=True)
class TmsConfig:
    """All settings of one TMS process."""

    server_url: str
    token: str
    schedd: str
    job_event_log_dir: str
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
    backoff_max: float = 60.0
    request_timeout: float = 30.0
    site_requirements: str = ""
    pilot_image_cvmfs: str = ""
    pilot_image_docker: str = ""
    pilot_executable: str = "ewms-pilot"
    pilot_runner: str = "apptainer"
    local_job_command: str = "ewms-pilot"
    local_state_dir: str = ""
    log_level: str = "INFO"

    def __repr__(self) -> str:  # keep the token out of any log line
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["token"] = "***"
        return f"TmsConfig({fields})"

    __str__ = __repr__


class ConfigError(ValueError):
    """A setting is missing or malformed."""


def from_env(environ: Mapping[str, str] | None = None) -> TmsConfig:
    """Build the config from ``environ`` (default: ``os.environ``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = environ.get(s.env)
        if raw is None or raw == "":
            if s.default is None:
                raise ConfigError(f"{s.env} is required")
            values[s.field] = socket.gethostname() if s.default is _HOST else s.default
            continue
        try:
            values[s.field] = s.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{s.env}: {e}") from None
    values["job_event_log_dir"] = os.path.abspath(values["job_event_log_dir"])
    if not values["local_state_dir"]:
        values["local_state_dir"] = os.path.join(values["job_event_log_dir"], ".local-schedd")
    return TmsConfig(**values)


def help_text() -> str:
    """The settings table shown by ``--help``."""
    lines = ["settings (environment variables):"]
    for s in SETTINGS:
        default = "required" if s.default is None else f"default: {s.default}"
        lines.append(f"  {s.env}\n      {s.help} ({default})")
    return "\n".join(lines)
