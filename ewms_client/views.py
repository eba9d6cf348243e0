"""What `ewms list` and `ewms status` print: plain text for people, one screen each.

The status screen is a sequence of sections, each a function of one `Snapshot`, so that a
section (e.g. task progress, once the server serves it) is added without touching the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import progress
from .client import EWMSClient, QueueProfile, deactivated_when, timestamp

PHASES = {  # what a taskforce's phase means to its user
    "pre-mq-activation": "waiting for its queues to be made",
    "pre-launch": "queues made; waiting for launch control",
    "pending-starter": "waiting for the ewms-tms of schedd {schedd} to submit it",
    "condor-submit": "submitted: HTCondor cluster {cluster_id}",
    "pending-stopper": "workflow ended; waiting for the ewms-tms to remove its jobs",
    "condor-rm": "removal requested; waiting for HTCondor to report its jobs gone",
    "condor-complete": "over: its jobs are gone",
    "submit-failed": "over: every submit attempt failed",
    "cancelled": "over: the workflow ended before it reached HTCondor",
}
FAILED_PHASES = ("submit-failed",)
TOP_ERRORS = 5


def state(workflow: dict[str, Any]) -> str:
    ended = workflow.get("deactivated")
    return f"{ended}, {deactivated_when(workflow)}" if ended else "active"


def workflow_table(workflows: list[dict[str, Any]]) -> str:
    """`ewms list`: one line per workflow, in the order given."""
    rows = [("WORKFLOW", "CREATED", "PRIORITY", "STATE")]
    rows += [
        (wf["workflow_id"], timestamp(wf.get("timestamp")), str(wf.get("priority", "?")), state(wf))
        for wf in workflows
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)


@dataclass(frozen=True)
class Snapshot:
    """Everything the status screen shows, read once."""

    workflow: dict[str, Any]
    directives: list[dict[str, Any]]
    taskforces: list[dict[str, Any]]
    queues: list[QueueProfile]
    progress: dict[str, Any] | None = None
    """GET /v1/workflows/{id}/progress; None from a server without it."""

    @classmethod
    def load(cls, client: EWMSClient, workflow_id: str) -> Snapshot:
        return cls(
            client.workflow(workflow_id),
            client.task_directives(workflow_id),
            client.taskforces(workflow_id),
            client.public_queues(workflow_id),
            progress.fetch(client, workflow_id),
        )

    def queue_name(self, mqid: str) -> str:
        """A public queue's alias; a private queue's id (the user never named it)."""
        for q in self.queues:
            if q.mqid == mqid:
                return q.alias
        return f"{mqid} (private)"


def workflow_section(s: Snapshot) -> list[str]:
    wf = s.workflow
    if not s.queues:
        queues = "none public"
    elif all(q.is_activated for q in s.queues):
        queues = "open"
    elif wf.get("deactivated"):
        queues = "closed"
    else:
        queues = "not made yet"
    return [
        f"workflow {wf.get('workflow_id')}: {state(wf)}",
        f"  created {timestamp(wf.get('timestamp'))}, priority {wf.get('priority', '?')}",
        f"  public queues: {', '.join(q.alias for q in s.queues) or '-'} ({queues})",
    ]


def tasks_section(s: Snapshot) -> list[str]:
    lines = ["tasks"]
    for i, d in enumerate(s.directives, 1):
        command = " ".join(filter(None, [d.get("task_image", ""), d.get("task_args", "")]))
        lines.append(f"  {i}. {d.get('task_id')}: {_cut(command, 100)}")
        reads = ", ".join(map(s.queue_name, d.get("input_queues", []))) or "-"
        writes = ", ".join(map(s.queue_name, d.get("output_queues", []))) or "-"
        lines.append(f"     reads {reads}; writes {writes}")
        tfs = sorted(
            (tf for tf in s.taskforces if tf.get("task_id") == d.get("task_id")),
            key=lambda tf: tf.get("timestamp") or 0,
        )
        for tf in tfs:
            lines.extend("     " + line for line in taskforce_lines(tf))
        if not tfs:
            lines.append("     no taskforce")
    return lines if s.directives else []


def taskforce_lines(tf: dict[str, Any]) -> list[str]:
    phase = tf.get("phase", "?")
    where = tf.get("cluster_location") or tf.get("schedd") or "?"
    meaning = PHASES.get(phase, "").format(schedd=tf.get("schedd", "?"), cluster_id=tf.get("cluster_id"))
    lines = [
        f"taskforce {tf.get('taskforce_uuid')} at {where}, {tf.get('n_workers', '?')} worker(s)",
        f"  {phase}" + (f": {meaning}" if meaning else ""),
    ]
    if phase in FAILED_PHASES and (why := _last_failure(tf)):
        lines.append(f"  last error: {_cut(why, 160)}")
    lines.append(f"  workers: {workers(tf.get('compound_statuses') or {})}")
    lines.extend("  " + line for line in progress.diagnosis_lines(tf))
    return lines


def workers(compound: dict[str, dict[str, int]]) -> str:
    """HTCondor job statuses with their pilots' statuses: `RUNNING 2 (Tasking 2), ...`."""
    parts = []
    for job_status, by_pilot in sorted(compound.items()):
        by_pilot = {p: int(n) for p, n in (by_pilot or {}).items() if int(n)}
        inner = ", ".join(f"{p} {n}" for p, n in sorted(by_pilot.items()) if p)
        parts.append(f"{job_status} {sum(by_pilot.values())}" + (f" ({inner})" if inner else ""))
    return ", ".join(parts) or "none reported yet"


def errors_section(s: Snapshot) -> list[str]:
    errors: Counter[str] = Counter()
    for tf in s.taskforces:
        errors.update({k: int(v) for k, v in (tf.get("top_task_errors") or {}).items()})
    if not errors:
        return []
    lines = [f"top task errors ({sum(errors.values())} in all)"]
    lines += [f"  {n:>5} x {_cut(text, 160)}" for text, n in errors.most_common(TOP_ERRORS)]
    wf = s.workflow.get("workflow_id")
    lines.append(f"  messages tasks kept failing on: ewms pull {wf} --dead-letter --out -")
    return lines


Section = Callable[[Snapshot], list[str]]


def progress_section(s: Snapshot) -> list[str]:
    """Tasks done, dead-lettered and pending, rate and ETA (errors have their own section)."""
    return progress.progress_lines(s.progress, errors=False) if s.progress else []


SECTIONS: tuple[Section, ...] = (workflow_section, progress_section, tasks_section, errors_section)


def status_screen(s: Snapshot, sections: tuple[Section, ...] = SECTIONS) -> str:
    blocks = [section(s) for section in sections]
    return "\n\n".join("\n".join(b) for b in blocks if b)


def _last_failure(tf: dict[str, Any]) -> str:
    for entry in reversed(tf.get("phase_change_log") or []):
        if not entry.get("was_successful") and entry.get("context"):
            return str(entry["context"])
    return ""


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
