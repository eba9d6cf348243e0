"""Per-job and per-cluster state built from job events: pure, no I/O, no htcondor2 import.

A job lives in ``ClusterState.live`` until it ends (terminated / aborted); then it is folded
into counters and dropped, so memory follows the number of live jobs, not of events.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

# HTCondor event type numbers (htcondor2.JobEventType values)
SUBMIT: Final = 0
EXECUTE: Final = 1
EVICTED: Final = 4
TERMINATED: Final = 5
SHADOW_EXCEPTION: Final = 7
GENERIC: Final = 8
ABORTED: Final = 9
SUSPENDED: Final = 10
UNSUSPENDED: Final = 11
HELD: Final = 12
RELEASED: Final = 13
RECONNECT_FAILED: Final = 24
CLUSTER_REMOVE: Final = 36

# job statuses, numbered like HTCondor's JobStatus
IDLE, RUNNING, REMOVED, COMPLETED, HELD_STATUS, TRANSFERRING_OUTPUT, SUSPENDED_STATUS = 1, 2, 3, 4, 5, 6, 7
JOB_STATUS_NAMES: Final = {
    IDLE: "IDLE",
    RUNNING: "RUNNING",
    REMOVED: "REMOVED",
    COMPLETED: "COMPLETED",
    HELD_STATUS: "HELD",
    TRANSFERRING_OUTPUT: "TRANSFERRING_OUTPUT",
    SUSPENDED_STATUS: "SUSPENDED",
}
UNKNOWN: Final = "UNKNOWN"
NO_PILOT_STATUS: Final = "None"  # the pilot has not chirped a status (yet)

# event type -> status the job enters; events missing here leave the status as it is
_STATUS_AFTER: Final = {
    SUBMIT: IDLE,
    EXECUTE: RUNNING,
    EVICTED: IDLE,
    SHADOW_EXCEPTION: IDLE,
    SUSPENDED: SUSPENDED_STATUS,
    UNSUSPENDED: RUNNING,
    RELEASED: IDLE,
    RECONNECT_FAILED: IDLE,
}

_PILOT_STOPS: Final = frozenset({EVICTED, SHADOW_EXCEPTION, RECONNECT_FAILED, HELD})
"""Events after which the job's pilot, if it runs again, is a new process."""
RESCHEDULES: Final = frozenset({EVICTED, SHADOW_EXCEPTION, RECONNECT_FAILED})
"""The job left its machine and goes back to idle: a reschedule, never a failure."""
FATAL: Final = "FatalError"

MAX_DECISIONS: Final = 20
MEMORY_HOLD_CODE: Final = 34
"""HTCondor's HoldReasonCode for a job over its memory limit."""
_MEMORY_HOLD = re.compile(r"memory usage exceeded|over .{0,40}memory limit|exceeded .{0,20}memory", re.I)


def is_memory_hold(code: int | None, reason: str) -> bool:
    return code == MEMORY_HOLD_CODE or bool(_MEMORY_HOLD.search(reason))


_NOT_A_NAME = re.compile(r'[\x00-\x1f"\\*]')
MAX_MACHINES: Final = 500
"""Machines reported per taskforce (those with the most failures first)."""


def machine_of(slot_name: str | None, execute_host: str | None) -> str:
    """The machine an execute event names: its ``SlotName`` (``slot1_3@node17``), else the
    ``alias=`` or address of its ``ExecuteHost`` sinful string; "" when none is readable."""
    name = ""
    host = execute_host or ""
    if slot_name and "@" in slot_name:
        name = slot_name.rpartition("@")[2]
    elif alias := re.search(r"[?&]alias=([^&>]+)", host):
        name = alias[1]
    elif address := re.match(r"<\[?([^\]>]+?)\]?(?::\d+)?[?>]", host):
        name = address[1]
    return "" if _NOT_A_NAME.search(name) else name.strip()[:255]


CHIRP_PREFIX: Final = "HTChirpEWMSPilot"
_CHIRP_PREFIX_LEN: Final = len(CHIRP_PREFIX)


_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t"}


def _unescape(value: str) -> str:
    """ClassAd string escapes (``\\"``, ``\\\\``, ``\\n``...), as the pilot writes them."""
    return _ESCAPE.sub(lambda m: _UNESCAPED.get(m[1], m[1]), value)


def parse_chirp(text: str) -> tuple[str, str] | None:
    """``HTChirpEWMSPilot<Attr>: "<value>"`` -> (Attr, value); the closing quote may be cut off."""
    if not text.startswith(CHIRP_PREFIX):
        return None
    attr, sep, value = text[_CHIRP_PREFIX_LEN:].partition(": ")
    if not sep or not attr or not value.startswith('"'):
        return None
    body = value[1:-1]
    if len(value) > 1 and value.endswith('"') and (len(body) - len(body.rstrip("\\"))) % 2 == 0:
        value = body  # a closing quote (not an escaped one)
    else:
        value = value[1:]
    return attr, (_unescape(value) if "\\" in value else value)


class JobState:
    """What is known about one live job."""

    __slots__ = (
        "acted",
        "fatal_counted",
        "held_ts",
        "hold_code",
        "hold_reason",
        "hold_subcode",
        "machine",
        "memory_bytes",
        "n_released",
        "pilot_error",
        "pilot_status",
        "status",
        "tasks_failed",
        "tasks_success",
    )

    def __init__(self) -> None:
        self.status = IDLE
        self.hold_reason = ""
        self.hold_code: int | None = None
        self.hold_subcode: int | None = None
        self.held_ts = 0
        self.n_released = 0
        self.pilot_status = NO_PILOT_STATUS
        self.pilot_error = ""
        self.tasks_success = 0  # the running pilot's totals (TasksSuccess / TasksFailed chirps)
        self.tasks_failed = 0
        self.acted = False  # the hold policy acted on the current hold
        self.machine = ""  # where it runs or last ran ("": not yet known)
        self.memory_bytes = 0  # 0: the cluster's; more once a memory hold was resubmitted
        self.fatal_counted = False  # this pilot's FatalError is in the machine counts

    def job_key(self) -> str:
        if self.status == HELD_STATUS:
            return f"HELD: {self.hold_reason}"
        return JOB_STATUS_NAMES.get(self.status, UNKNOWN)


class ClusterState:
    """All jobs of one cluster (one taskforce)."""

    def __init__(self, cluster_id: int, n_workers: int) -> None:
        self.cluster_id = cluster_id
        self.n_workers = n_workers
        self.live: dict[int, JobState] = {}
        self.ended: set[int] = set()
        self.ended_counts: Counter[tuple[str, str]] = Counter()
        self.ended_errors: Counter[str] = Counter()
        self.banked_tasks = [0, 0]  # succeeded, failed: by pilots no longer running
        self.n_evictions = 0  # evictions, shadow exceptions, failed reconnects: reschedules
        self.machine_bank: dict[str, Counter[str]] = {}  # counts of pilots no longer running
        self.hold_decisions: list[dict[str, object]] = []  # the hold policy's last acts
        self.removed = False  # saw HTCondor's cluster-removed event
        self.dirty = True  # changed since statuses were last computed

    # --- applying events ---------------------------------------------------------------------------

    def job(self, proc: int) -> JobState | None:
        """The live job ``proc``, created on first sight; None once it has ended."""
        job = self.live.get(proc)
        if job is None:
            if proc in self.ended or proc < 0:
                return None
            job = self.live[proc] = JobState()
        return job

    def apply(
        self,
        etype: int,
        proc: int,
        info: str | None = None,
        hold_reason: str | None = None,
        ts: int = 0,
        hold_code: int | None = None,
        hold_subcode: int | None = None,
        machine: str | None = None,
    ) -> None:
        """Apply one event. ``info`` is a generic event's text; ``hold_*`` a hold's reason and
        codes; ``machine`` an execute event's machine."""
        self.dirty = True
        if etype == CLUSTER_REMOVE:
            self.removed = True
            return
        job = self.job(proc)
        if job is None:
            return
        if etype == GENERIC:
            if info is not None:
                chirp = parse_chirp(info)
                if chirp is not None:
                    attr, value = chirp
                    if attr == "Status":
                        job.pilot_status = value
                        if value == FATAL and job.machine and not job.fatal_counted:
                            job.fatal_counted = True
                            self._machine(job.machine)["fatal"] += 1
                    elif attr == "Error":
                        job.pilot_error = value
                    elif attr == "TasksSuccess" and value.isdigit():
                        job.tasks_success = int(value)
                    elif attr == "TasksFailed" and value.isdigit():
                        job.tasks_failed = int(value)
            return
        if etype in (TERMINATED, ABORTED):
            job.status = COMPLETED if etype == TERMINATED else REMOVED
            self._end(proc, job)
            return
        if etype in _PILOT_STOPS:
            self._bank(job)  # a restarted pilot counts its tasks from zero again
        if etype == HELD:
            if job.machine:
                self._machine(job.machine)["held"] += 1
            job.status = HELD_STATUS
            job.hold_reason = hold_reason or ""
            job.hold_code, job.hold_subcode = hold_code, hold_subcode
            job.held_ts = ts
            job.acted = False
            return
        if etype == RELEASED:
            job.n_released += 1
        elif etype in RESCHEDULES:
            self.n_evictions += 1
        elif etype == EXECUTE:
            job.machine = machine or job.machine
            job.fatal_counted = False  # a new pilot process
        status = _STATUS_AFTER.get(etype)
        if status is not None:
            job.status = status

    def _machine(self, name: str) -> Counter[str]:
        return self.machine_bank.setdefault(name, Counter())

    def _bank(self, job: JobState) -> None:
        self.banked_tasks[0] += job.tasks_success
        self.banked_tasks[1] += job.tasks_failed
        if job.machine:
            bank = self._machine(job.machine)
            bank["succeeded"] += job.tasks_success
            bank["tasks_failed"] += job.tasks_failed
        job.tasks_success = job.tasks_failed = 0

    def _end(self, proc: int, job: JobState) -> None:
        del self.live[proc]
        self.ended.add(proc)
        self.ended_counts[(job.job_key(), job.pilot_status)] += 1
        if job.pilot_error:
            self.ended_errors[job.pilot_error] += 1
        self._bank(job)

    # --- reading state -----------------------------------------------------------------------------

    @property
    def gone(self) -> bool:
        """HTCondor no longer has any job of this cluster."""
        return self.removed or (not self.live and len(self.ended) >= self.n_workers > 0)

    def compound_statuses(self) -> dict[str, dict[str, int]]:
        counts: Counter[tuple[str, str]] = Counter(self.ended_counts)
        for job in self.live.values():
            counts[(job.job_key(), job.pilot_status)] += 1
        out: dict[str, dict[str, int]] = {}
        for (job_key, pilot), n in sorted(counts.items()):
            out.setdefault(job_key, {})[pilot] = n
        return out

    def top_task_errors(self, limit: int = 10) -> dict[str, int]:
        errors: Counter[str] = Counter(self.ended_errors)
        for job in self.live.values():
            if job.pilot_error:
                errors[job.pilot_error] += 1
        return dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])

    def held_jobs(self) -> list[tuple[int, JobState]]:
        return [(p, j) for p, j in self.live.items() if j.status == HELD_STATUS]

    def task_counts(self) -> dict[str, int]:
        """Tasks the cluster's pilots ran, ended jobs included (each pilot chirps its totals)."""
        succeeded, failed = self.banked_tasks
        for job in self.live.values():
            succeeded += job.tasks_success
            failed += job.tasks_failed
        return {"succeeded": succeeded, "failed": failed}

    def record_decision(self, proc: int, action: str, reason: str, memory: int | None, ts: float) -> None:
        """What the hold policy did to a held job (the diagnosis shows the last ones)."""
        self.hold_decisions.append(
            {
                "proc": proc,
                "action": action,
                "reason": reason[:1024],
                "memory_mb": None if memory is None else memory >> 20,
                "ts": float(ts),
            }
        )
        del self.hold_decisions[:-MAX_DECISIONS]
        self.dirty = True

    def machine_counts(self) -> dict[str, dict[str, int]]:
        """{machine: {tasks_failed, fatal, held, succeeded}} since the cluster started."""
        out = {m: Counter(c) for m, c in self.machine_bank.items()}
        for job in self.live.values():
            if job.machine:
                c = out.setdefault(job.machine, Counter())
                c["succeeded"] += job.tasks_success
                c["tasks_failed"] += job.tasks_failed
        keys = ("tasks_failed", "fatal", "held", "succeeded")
        worst = sorted(
            out.items(), key=lambda mc: (-(mc[1]["tasks_failed"] + mc[1]["fatal"] + mc[1]["held"]), mc[0])
        )
        return {m: {k: c[k] for k in keys} for m, c in sorted(worst[:MAX_MACHINES])}

    def jobs_by_state(self) -> dict[str, int]:
        """idle / running / held / ended, as the diagnosis counts them."""
        out = {"idle": 0, "running": 0, "held": 0, "ended": len(self.ended)}
        for job in self.live.values():
            if job.status == HELD_STATUS:
                out["held"] += 1
            elif job.status == IDLE:
                out["idle"] += 1
            else:
                out["running"] += 1
        return out
