"""A taskforce's diagnosis (schema: DiagnosisObject): why its jobs are idle or held, and what
the hold policy will do next. Pure: built from the cluster's state (the job event log) and the
backend's last `IdleReport`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backends.base import IdleReport
from .jobstate import ClusterState

if TYPE_CHECKING:
    from .watcher import HoldPolicy

MAX_HELD = 20
MAX_TEXT = 1024

NO_MATCH = "no matching slot"
OVER_SHARE = "over the user's share or cap"
NOT_YET = "not yet matched"
MATCHED = "matched, waiting to start"
UNREACHABLE = "schedd unreachable"


def idle_reason(last_rejection: str | None, n_matches: int) -> str:
    """An idle HTCondor job's reason, from its ad's LastRejMatchReason and NumJobMatches (what
    `condor_q -better-analyze` starts from): the negotiator's last word on it, in our words
    where we know them."""
    text = (last_rejection or "").strip()
    lowered = text.lower()
    if lowered == "no match found":
        return NO_MATCH
    if any(k in lowered for k in ("priority", "submitter limit", "concurrency limit", "quota")):
        return OVER_SHARE
    if text:
        return text[:200]
    return MATCHED if n_matches > 0 else NOT_YET


def held_jobs(state: ClusterState, policy: HoldPolicy, memory_bytes: int = 0) -> list[dict[str, Any]]:
    out = []
    for proc, job in sorted(state.held_jobs())[:MAX_HELD]:
        memory = None
        if job.acted:
            action, at = "none", None
        else:
            action, memory = policy.next_action(job, memory_bytes)
            at = float(job.held_ts) + policy.delay
        out.append(
            {
                "next_memory_mb": None if memory is None else memory >> 20,
                "proc": proc,
                "reason": job.hold_reason[:MAX_TEXT],
                "code": job.hold_code if isinstance(job.hold_code, int) and job.hold_code >= 0 else None,
                "subcode": job.hold_subcode if isinstance(job.hold_subcode, int) else None,
                "since": float(job.held_ts),
                "n_released": job.n_released,
                "next_action": action,
                "next_action_ts": at,
            }
        )
    return out


def diagnosis(
    state: ClusterState,
    policy: HoldPolicy,
    backend: str,
    report: IdleReport | None,
    now: float,
    memory_bytes: int = 0,
) -> dict[str, Any]:
    jobs = state.jobs_by_state()
    reasons = dict(report.reasons) if report is not None and jobs["idle"] else {}
    return {
        "ts": float(now),
        "backend": backend[:64],
        "jobs": jobs,
        "idle_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:50]),
        "held": held_jobs(state, policy, memory_bytes),
        "hold_decisions": list(state.hold_decisions),
        "n_evictions": state.n_evictions,
        "matches": (
            {"ever_matched": report.matches[0], "never_matched": report.matches[1]}
            if report is not None and report.matches is not None
            else None
        ),
        "slots": (
            {"total": report.slots[0], "busy": report.slots[1]}
            if report is not None and report.slots is not None
            else None
        ),
        "error": report.error[:MAX_TEXT] if report is not None and report.error else None,
    }


def without_ts(diag: dict[str, Any]) -> dict[str, Any]:
    """What to compare to decide whether it changed."""
    return {k: v for k, v in diag.items() if k != "ts"}
