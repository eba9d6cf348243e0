"""The one small interface every TMS backend implements, and the values it exchanges."""

from __future__ import annotations

import dataclasses
from typing import Protocol


class BackendError(Exception):
    """A backend could not do what was asked (the schedd refused, a process failed...)."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """Everything needed to submit one taskforce as one cluster of ``n_workers`` jobs."""

    taskforce_uuid: str
    n_workers: int
    submit_dict: dict[str, str]  # the HTCondor submit description (no secrets)
    environment: dict[str, str]  # the pilot's environment (no secrets; names the auth file)
    job_dir: str  # per-taskforce directory: event log, auth file, job output
    job_event_log_fpath: str
    n_cores: int
    memory_bytes: int
    disk_bytes: int
    max_runtime: int  # seconds
    transfer_stdouterr: bool


@dataclasses.dataclass(frozen=True)
class IdleReport:
    """Why one cluster's idle jobs do not run, as far as the backend can tell."""

    reasons: dict[str, int]
    """Idle jobs by reason (see DiagnosisObject.idle_reasons in schema/openapi.json)."""
    matches: tuple[int, int] | None = None
    """htcondor: (idle jobs matched to a slot at least once, never matched)."""
    slots: tuple[int, int] | None = None
    """local: (the machine's job slots, slots running a job)."""
    error: str | None = None
    """What kept the backend from telling more."""


class Backend(Protocol):
    """Submit, find by taskforce uuid, remove (and release held jobs) -- one cluster per taskforce."""

    name: str

    async def submit(self, spec: ClusterSpec) -> int:
        """Queue ``spec.n_workers`` jobs as one cluster; return its id. Raises BackendError."""

    async def find_cluster(self, taskforce_uuid: str) -> int | None:
        """The id of a cluster in the queue carrying this taskforce uuid, else None."""

    async def remove(self, cluster_id: int, reason: str, proc: int | None = None) -> None:
        """Remove the whole cluster, or one job of it. Raises BackendError."""

    async def release(self, cluster_id: int, proc: int) -> None:
        """Release one held job. Raises BackendError."""

    async def resubmit(self, cluster_id: int, proc: int, memory_bytes: int) -> None:
        """Run one held job again with ``memory_bytes`` of memory. Raises BackendError."""

    async def set_quarantine(self, machines: set[str]) -> None:
        """The machines (``*``: all) the server quarantined at this schedd's locations: no new
        job starts there, and pilots there stop and give back their tasks. Raises BackendError."""

    async def poll(self) -> None:
        """The backend's own duty each watcher pass (the local backend ends the clusters of
        supervisors that died). Raises BackendError."""

    async def explain_idle(self, idle: dict[int, list[int]], n_running: int) -> dict[int, IdleReport]:
        """Why the idle jobs (cluster id -> procs) do not run; ``n_running``: jobs this TMS sees
        running. Never raises: what failed is said in each report's ``error``."""

    async def close(self) -> None:
        """Free resources (jobs keep running: they belong to the schedd, not to us)."""
