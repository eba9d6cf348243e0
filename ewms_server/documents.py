"""The stored documents: one TypedDict per collection and sub-document, one factory each."""

from __future__ import annotations

import time
from typing import Any, NotRequired, TypedDict

from .ids import new_id
from .phases import Phase


class PhaseChangeLogEntry(TypedDict):
    target_phase: str
    timestamp: float
    was_successful: bool
    source_event_time: float | None
    source_entity: str
    context: str


class Workflow(TypedDict):
    workflow_id: str
    timestamp: float
    priority: int
    deactivated: str | None
    deactivated_ts: float | None
    owner: str
    taskforces_stopped: bool
    queues_revoked: bool
    queues_deleted: bool
    notify_url: str | None
    notify_watch: bool


class TaskDirective(TypedDict):
    task_id: str
    workflow_id: str
    cluster_locations: list[str]
    task_image: str
    task_args: str
    task_env: dict[str, str]
    init_image: str
    init_args: str
    init_env: dict[str, str]
    timestamp: float
    input_queues: list[str]
    output_queues: list[str]
    owner: str
    secrets: list[str]
    autoscale: NotRequired[Autoscale | None]
    """Absent in documents stored before autoscaling existed."""


class Secret(TypedDict):
    secret_id: str
    owner: str
    key: str
    ciphertext: str
    created_ts: float
    updated_ts: float


class Autoscale(TypedDict):
    min_workers: int
    max_workers: int
    active: bool
    low_since: float | None
    last_decisions: list[dict[str, Any]]


def autoscale(requested: dict[str, Any] | None) -> Autoscale | None:
    if requested is None:
        return None
    return Autoscale(
        min_workers=int(requested.get("min_workers", 0)),
        max_workers=int(requested["max_workers"]),
        active=True,
        low_since=None,
        last_decisions=[],
    )


class TaskCounts(TypedDict):
    succeeded: int
    failed: int


class Taskforce(TypedDict):
    taskforce_uuid: str
    task_id: str
    workflow_id: str
    timestamp: float
    priority: int
    collector: str | None
    schedd: str
    cluster_location: str
    n_workers: int
    pilot_config: dict[str, Any]
    worker_config: dict[str, Any]
    cluster_id: int | None
    submit_dict: dict[str, Any]
    job_event_log_fpath: str
    condor_complete_ts: float | None
    phase: str
    phase_change_log: list[PhaseChangeLogEntry]
    compound_statuses: dict[str, dict[str, int]]
    top_task_errors: dict[str, int]
    task_counts: TaskCounts
    diagnosis: dict[str, Any] | None
    statuses_ts: float | None
    n_failed_submits: int
    lease_until: float
    owner: str
    origin: str


class MQProfile(TypedDict):
    mqid: str
    workflow_id: str
    alias: str
    is_public: bool
    is_activated: bool
    auth_token: str | None
    broker_type: str | None
    broker_address: str | None
    timestamp: float
    owner: str


def log_entry(
    *,
    target_phase: Phase,
    was_successful: bool,
    source_entity: str,
    context: str = "",
    source_event_time: float | None = None,
) -> PhaseChangeLogEntry:
    return PhaseChangeLogEntry(
        target_phase=str(target_phase),
        timestamp=time.time(),
        was_successful=was_successful,
        source_event_time=source_event_time,
        source_entity=source_entity,
        context=context,
    )


def workflow(*, priority: int, owner: str, notify_url: str | None = None) -> Workflow:
    return Workflow(
        workflow_id=new_id("WF"),
        timestamp=time.time(),
        priority=priority,
        deactivated=None,
        deactivated_ts=None,
        owner=owner,
        taskforces_stopped=False,
        queues_revoked=False,
        queues_deleted=False,
        notify_url=notify_url,
        notify_watch=False,
    )


def task_directive(
    *,
    workflow_id: str,
    owner: str,
    task: dict[str, Any],
    input_queues: list[str],
    output_queues: list[str],
) -> TaskDirective:
    return TaskDirective(
        task_id=new_id("TK"),
        workflow_id=workflow_id,
        cluster_locations=list(task["cluster_locations"]),
        task_image=task["task_image"],
        task_args=task.get("task_args", ""),
        task_env=dict(task.get("task_env", {})),
        init_image=task.get("init_image", ""),
        init_args=task.get("init_args", ""),
        init_env=dict(task.get("init_env", {})),
        timestamp=time.time(),
        input_queues=input_queues,
        output_queues=output_queues,
        owner=owner,
        secrets=list(task.get("secrets", [])),
        autoscale=autoscale(task.get("autoscale")),
    )


def secret(*, owner: str, key: str, ciphertext: str) -> Secret:
    now = time.time()
    return Secret(
        secret_id=new_id("SE"), owner=owner, key=key, ciphertext=ciphertext, created_ts=now, updated_ts=now
    )


def taskforce(
    *,
    task_id: str,
    workflow_id: str,
    owner: str,
    priority: int,
    cluster_location: str,
    schedd: str,
    collector: str,
    n_workers: int,
    pilot_config: dict[str, Any],
    worker_config: dict[str, Any],
    phase: Phase,
    source_entity: str,
    origin: str = "workflow",
) -> Taskforce:
    """`collector` "" (the location names none) is stored as null, as EWMS shows it; `origin`
    is "workflow" (its create) or "add-workers"."""
    return Taskforce(
        taskforce_uuid=new_id("TF"),
        task_id=task_id,
        workflow_id=workflow_id,
        timestamp=time.time(),
        priority=priority,
        collector=collector or None,
        schedd=schedd,
        cluster_location=cluster_location,
        n_workers=n_workers,
        pilot_config=pilot_config,
        worker_config=worker_config,
        cluster_id=None,
        submit_dict={},
        job_event_log_fpath="",
        condor_complete_ts=None,
        phase=str(phase),
        phase_change_log=[
            log_entry(
                target_phase=phase,
                was_successful=True,
                source_entity=source_entity,
                context="created",
            )
        ],
        compound_statuses={},
        top_task_errors={},
        task_counts=TaskCounts(succeeded=0, failed=0),
        diagnosis=None,
        statuses_ts=None,
        n_failed_submits=0,
        lease_until=0.0,
        owner=owner,
        origin=origin,
    )


def mq_profile(*, workflow_id: str, owner: str, alias: str, is_public: bool) -> MQProfile:
    return MQProfile(
        mqid=new_id("Q"),
        workflow_id=workflow_id,
        alias=alias,
        is_public=is_public,
        is_activated=False,
        auth_token=None,
        broker_type=None,
        broker_address=None,
        timestamp=time.time(),
        owner=owner,
    )


PILOT_CONFIG_DEFAULTS: dict[str, Any] = {
    "tag": "latest",
    "image_source": "cvmfs",
    "environment": {},
    "input_files": [],
}
WORKER_CONFIG_DEFAULTS: dict[str, Any] = {
    "do_transfer_worker_stdouterr": False,
    "priority": 50,
    "condor_requirements": "",
}


class JobFile(TypedDict):
    path: str
    size: int
    sha256: str


class Job(TypedDict):
    job_id: str
    owner: str
    timestamp: float
    workflow_id: str
    task_id: str
    state: str
    message: str
    exit_code: int | None
    cluster_location: str
    n_cores: int
    memory: str
    max_runtime: int
    secrets: list[str]
    inputs: list[JobFile]
    outputs: list[JobFile]
    runner_token_sha256: str
    published: bool
    started_ts: float | None
    finished_ts: float | None
    files_deleted: bool


def job(
    *,
    job_id: str,
    owner: str,
    workflow_id: str,
    task_id: str,
    cluster_location: str,
    n_cores: int,
    memory: str,
    max_runtime: int,
    secrets: list[str],
    inputs: list[JobFile],
    runner_token_sha256: str,
) -> Job:
    return Job(
        job_id=job_id,
        owner=owner,
        timestamp=time.time(),
        workflow_id=workflow_id,
        task_id=task_id,
        state="Queued",
        message="waiting for a pilot",
        exit_code=None,
        cluster_location=cluster_location,
        n_cores=n_cores,
        memory=memory,
        max_runtime=max_runtime,
        secrets=secrets,
        inputs=inputs,
        outputs=[],
        runner_token_sha256=runner_token_sha256,
        published=False,
        started_ts=None,
        finished_ts=None,
        files_deleted=False,
    )
