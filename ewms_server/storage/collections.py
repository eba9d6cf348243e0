"""The one table of facts about each collection: both drivers, the schema checks, the ids and
/v1/query/* read it from here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Index:
    """Fields in order; a leading '-' sorts that field descending."""

    fields: tuple[str, ...]
    unique: bool = False

    def keys(self) -> list[tuple[str, int]]:
        return [(f.lstrip("-"), -1 if f.startswith("-") else 1) for f in self.fields]


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    id_field: str
    id_prefix: str
    component: str
    """The schema component (schema/openapi.json) every write is checked against."""
    queryable: bool
    """Whether /v1/query/* may read it (mq profiles hold credentials: never)."""
    indexes: tuple[Index, ...]
    kinds: Mapping[str, str]
    """JSON types the schema allows for each indexed field, e.g. "string|null". On SQLite each
    indexed field is a generated column; the query compiler uses the column only for values of
    these types, so a comparison means the same on the column as on the JSON document."""

    def columns(self) -> list[str]:
        """The indexed fields, in first-use order (SQLite's generated columns)."""
        return list(dict.fromkeys(f.lstrip("-") for ix in self.indexes for f in ix.fields))


def _spec(
    name: str,
    id_field: str,
    prefix: str,
    component: str,
    queryable: bool,
    *extra: Index,
    per_workflow: bool = True,
    **kinds: str,
) -> CollectionSpec:
    base: tuple[Index, ...] = (Index((id_field,), unique=True), Index(("owner",)))
    if id_field != "workflow_id" and per_workflow:
        base += (Index(("workflow_id",)),)
    spec = CollectionSpec(name, id_field, prefix, component, queryable, base + extra, kinds)
    missing = set(spec.columns()) - set(kinds)
    assert not missing, f"{name}: no kind for indexed field(s) {missing}"
    return spec


COLLECTIONS: dict[str, CollectionSpec] = {
    s.name: s
    for s in (
        _spec(
            "workflows",
            "workflow_id",
            "WF",
            "WorkflowObject",
            True,
            # the loops' repair sweeps: ended workflows not yet fully stopped / retired
            Index(("taskforces_stopped", "deactivated")),
            Index(("queues_deleted", "deactivated")),
            Index(("notify_watch",)),  # the webhook loop's input-consumed check
            workflow_id="string",
            owner="string",
            taskforces_stopped="boolean",
            deactivated="string|null",
            queues_deleted="boolean",
            notify_watch="boolean",
        ),
        _spec(
            "task_directives",
            "task_id",
            "TK",
            "TaskDirectiveObject",
            True,
            task_id="string",
            owner="string",
            workflow_id="string",
        ),
        _spec(
            "taskforces",
            "taskforce_uuid",
            "TF",
            "TaskforceObject",
            True,
            Index(("phase",)),
            Index(("task_id", "timestamp")),
            # pending-starter / pending-stopper: one index walk in offer order per schedd
            Index(("schedd", "phase", "-priority", "n_failed_submits", "timestamp", "lease_until")),
            taskforce_uuid="string",
            owner="string",
            workflow_id="string",
            phase="string",
            task_id="string",
            timestamp="number",
            schedd="string",
            priority="integer",
            n_failed_submits="integer",
            lease_until="number",
        ),
        _spec(
            "mqprofiles",
            "mqid",
            "Q",
            "MQProfileObject",
            False,
            mqid="string",
            owner="string",
            workflow_id="string",
        ),
        # one per workflow: its tasks-done-over-time samples (ops/progress_history.py)
        _spec(
            "workflow_progress",
            "workflow_id",
            "WF",
            "WorkflowProgressObject",
            False,
            workflow_id="string",
            owner="string",
        ),
        # script-and-files jobs (issue 13); their files are in the file cache (files_base.py)
        _spec(
            "jobs",
            "job_id",
            "JB",
            "JobObject",
            False,
            # the jobs loop: messages to publish, finished jobs' files to delete
            Index(("published", "state")),
            Index(("files_deleted", "finished_ts")),
            job_id="string",
            owner="string",
            workflow_id="string",
            published="boolean",
            state="string",
            files_deleted="boolean",
            finished_ts="number|null",
        ),
        # users' secrets, encrypted (layout 4): one per (owner, key); never queryable
        _spec(
            "secrets",
            "secret_id",
            "SE",
            "SecretObject",
            False,
            Index(("owner", "key"), unique=True),
            per_workflow=False,
            secret_id="string",
            owner="string",
            key="string",
        ),
        # the webhook outbox (webhooks/outbox.py): one row per event, claimed with a lease
        _spec(
            "webhook_outbox",
            "delivery_id",
            "WH",
            "WebhookDeliveryObject",
            False,
            Index(("event_key",), unique=True),
            Index(("status", "next_attempt_ts", "lease_until")),
            Index(("workflow_id", "status", "created_ts")),
            delivery_id="string",
            owner="string",
            workflow_id="string",
            event_key="string",
            status="string",
            next_attempt_ts="number",
            lease_until="number",
            created_ts="number",
        ),
        # machines (or whole locations, machine "*") quarantined: ops/quarantine.py
        _spec(
            "quarantine",
            "quarantine_id",
            "QR",
            "QuarantineObject",
            False,
            Index(("location", "machine"), unique=True),
            Index(("until",)),
            quarantine_id="string",
            owner="null",
            workflow_id="null",
            location="string",
            machine="string",
            until="number",
        ),
        # one per (taskforce, machine it ran on): the counts the TMS reported, and recent changes
        _spec(
            "machine_stats",
            "stat_id",
            "MS",
            "MachineStatsObject",
            False,
            Index(("taskforce_uuid", "machine"), unique=True),
            Index(("location", "machine", "updated")),
            stat_id="string",
            owner="string",
            workflow_id="string",
            taskforce_uuid="string",
            location="string",
            machine="string",
            updated="number",
        ),
    )
}
