"""What `ewms watch`, `ewms status` and `ewms retry` show: task progress from the server (tasks
done, dead-lettered and pending, rate, ETA), each taskforce's diagnosis, and the older
pilot-status summary."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from .client import ClientError

if TYPE_CHECKING:
    from .client import EWMSClient

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


# -- task progress from GET /v1/workflows/{id}/progress (ewms watch, status, retry) ----------

WIDTH = 40


def task_bar(succeeded: int, dead: int, waiting: int, width: int = WIDTH) -> str:
    """`[####xx------]`: tasks done (#), given up on (x, dead-lettered), still to do (-)."""
    total = succeeded + dead + waiting
    if total <= 0:
        return "[" + " " * width + "]"
    failed = max(1, round(width * dead / total)) if dead else 0  # a dead letter is never invisible
    done = min(width - failed, round(width * succeeded / total))
    return "[" + "#" * done + "x" * failed + "-" * (width - done - failed) + "]"


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _n(value: Any) -> str:
    return "?" if value is None else str(value)


def progress_lines(p: dict[str, Any], *, errors: bool = True) -> list[str]:
    """The progress answer as a few lines: the bar, rate and ETA, workers, and (with `errors`)
    the top errors."""
    t = p["totals"]
    dead, pending, in_flight = t.get("dead_lettered"), t.get("pending"), t.get("in_flight")
    waiting = (pending or 0) + (in_flight or 0)
    lines = [
        f"progress {task_bar(t['succeeded'], dead or 0, waiting)} {t['succeeded']} done, {_n(dead)} dead-lettered, "
        f"{_n(pending)} pending, {_n(in_flight)} in flight ({t['failed']} failed attempt(s))"
    ]
    rate, eta = p.get("rate_per_s"), p.get("eta_s")
    pace = "rate unknown yet" if rate is None else f"{rate:.2f} tasks/s"
    if eta is not None:
        pace += ", done" if eta == 0 and not waiting else f", ETA {duration(eta)}"
    elif rate == 0 and waiting:
        pace += ", no ETA: nothing is succeeding"
    lines.append(f"  {pace}")
    if p.get("broker_error"):
        lines.append(f"  queue figures unavailable: {p['broker_error']}")
    workers: Counter[str] = Counter()
    top: Counter[str] = Counter()
    for task in p.get("tasks", {}).values():
        workers.update(task.get("workers") or {})
        top.update(task.get("top_errors") or {})
    if workers:
        lines.append("  pilots: " + ", ".join(f"{n} {s}" for s, n in sorted(workers.items())))
    if len(p.get("tasks", {})) > 1:
        for task_id, task in p["tasks"].items():
            lines.append(f"  {task_id}: {task['succeeded']} done, {task['failed']} failed attempt(s)")
    for text, n in top.most_common(3 if errors else 0):
        lines.append(f"  error x{n}: {' '.join(text.split())[:160]}")
    if dead:
        lines.append(
            f"  {dead} message(s) tasks kept failing on: `ewms retry {p['workflow_id']}` tries them again"
        )
    return lines


def diagnosis_lines(tf: dict[str, Any]) -> list[str]:
    """One taskforce's diagnosis (from its TMS): why jobs are idle, held jobs and what comes next."""
    d = tf.get("diagnosis")
    if not d:
        return []
    jobs = d["jobs"]
    parts = [f"{jobs[k]} {k}" for k in ("running", "idle", "held", "ended") if jobs.get(k)]
    lines = [
        f"jobs: {', '.join(parts) or 'none'}"
        + (f"; {d['n_evictions']} eviction(s)" if d.get("n_evictions") else "")
    ]
    if d.get("idle_reasons"):
        lines.append("  idle: " + ", ".join(f"{n} {why}" for why, n in d["idle_reasons"].items()))
    if d.get("slots"):
        lines.append(f"  slots: {d['slots']['busy']} of {d['slots']['total']} busy")
    for h in d.get("held", []):
        code = f" (code {h['code']})" if h.get("code") is not None else ""
        then = {
            "release": "to be released",
            "remove": "to be removed (released too often)",
            "none": "the hold policy acted; waiting for HTCondor",
        }[h["next_action"]]
        when = (
            f" at {time.strftime('%H:%M:%S', time.localtime(h['next_action_ts']))}"
            if h.get("next_action_ts")
            else ""
        )
        lines.append(f"  held job {h['proc']}: {' '.join(h['reason'].split())[:160]}{code}; {then}{when}")
    if d.get("error"):
        lines.append(f"  the backend could not tell more: {d['error'][:160]}")
    return lines


def taskforce_lines(taskforces: list[dict[str, Any]]) -> list[str]:
    lines = []
    for tf in taskforces:
        where = tf.get("cluster_location") or tf.get("schedd") or "?"
        lines.append(f"taskforce {tf.get('taskforce_uuid')} at {where}: {tf.get('phase', '?')}")
        lines += ["  " + line for line in diagnosis_lines(tf)]
    return lines


def fetch(c: EWMSClient, workflow_id: str) -> dict[str, Any] | None:
    """The workflow's progress; None from a server that has no progress route (EWMS's own).
    Call it once the workflow was read: a 404 then means the route is missing, not the
    workflow (workflows are never deleted)."""
    try:
        result: dict[str, Any] = c.request("GET", f"/v1/workflows/{workflow_id}/progress")
    except ClientError as e:
        if str(e).startswith("404 "):
            return None
        raise
    return result


def screen(c: EWMSClient, workflow_id: str) -> tuple[str, bool]:
    """What `ewms watch` shows once, and whether there is nothing left to watch."""
    wf = c.workflow(workflow_id)
    tfs = c.taskforces(workflow_id)
    p = fetch(c, workflow_id)
    if p is None:  # an older server: the pilots' statuses are all there is
        return summary(wf, tfs), is_over(wf, tfs)
    head = f"workflow {workflow_id}" + (f" ({wf['deactivated']})" if wf.get("deactivated") else "")
    return "\n".join([head, *progress_lines(p), *taskforce_lines(tfs)]), is_over(wf, tfs)


def watch(c: EWMSClient, a: argparse.Namespace) -> None:
    """Redraws in place on a terminal; prints one block per update otherwise."""
    tty = sys.stdout.isatty()
    drawn = 0
    while True:
        text, over = screen(c, a.workflow_id)
        if tty and drawn:
            sys.stdout.write(f"\x1b[{drawn}F\x1b[J")  # up to the previous block, clear it
        print(text, flush=True)
        drawn = text.count("\n") + 1
        if a.once or over:
            return
        if not tty:
            print(flush=True)
        time.sleep(a.interval)


def retry(c: EWMSClient, a: argparse.Namespace) -> None:
    r = c.request("POST", f"/v1/workflows/{a.workflow_id}/actions/retry-dead-letters", {})
    print(f"requeued {r['requeued']} dead-lettered message(s) of {a.workflow_id}")
