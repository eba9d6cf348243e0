"""Summaries of a workflow's taskforces for `ewms watch`: pilot statuses and a progress bar."""

from __future__ import annotations

from collections import Counter
from typing import Any

TERMINAL_PHASES = ("condor-complete", "submit-failed", "cancelled")  # ewms_server.phases.TERMINAL
FINISHED_PILOT = ("Done", "FatalError")


def pilot_statuses(taskforces: list[dict[str, Any]]) -> Counter[str]:
    """Pilots by status, summed over HTCondor job statuses (held jobs show as HELD)."""
    counts: Counter[str] = Counter()
    for tf in taskforces:
        for job_status, by_pilot in (tf.get("compound_statuses") or {}).items():
            for pilot_status, n in (by_pilot or {}).items():
                key = "HELD" if str(job_status).startswith("HELD") else pilot_status
                counts[key] += int(n)
    return counts


def bar(fraction: float, width: int = 30) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def summary(workflow: dict[str, Any], taskforces: list[dict[str, Any]]) -> str:
    workers = sum(int(tf.get("n_workers") or 0) for tf in taskforces)
    statuses = pilot_statuses(taskforces)
    finished = sum(statuses[s] for s in FINISHED_PILOT)
    phases = Counter(tf.get("phase", "?") for tf in taskforces)
    lines = [
        f"workflow {workflow.get('workflow_id')}"
        + (f" ({workflow['deactivated']})" if workflow.get("deactivated") else ""),
        "taskforces: " + ", ".join(f"{n} {p}" for p, n in sorted(phases.items())),
        "pilots: " + (", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none yet"),
        f"pilots finished {bar(finished / workers if workers else 0.0)} ({finished}/{workers})",
    ]
    errors: Counter[str] = Counter()
    for tf in taskforces:
        errors.update({k: int(v) for k, v in (tf.get("top_task_errors") or {}).items()})
    for text, n in errors.most_common(3):
        lines.append(f"  error x{n}: {text[:160]}")
    return "\n".join(lines)


def is_over(workflow: dict[str, Any], taskforces: list[dict[str, Any]]) -> bool:
    """Nothing left to watch: every taskforce's cluster is gone, or the workflow ended."""
    if taskforces and all(tf.get("phase") in TERMINAL_PHASES for tf in taskforces):
        return True
    return bool(workflow.get("deactivated")) and all(
        tf.get("phase") in TERMINAL_PHASES or tf.get("phase") in ("pre-mq-activation", "pre-launch")
        for tf in taskforces
    )
