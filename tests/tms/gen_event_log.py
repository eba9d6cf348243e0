"""Generates a realistic HTCondor job event log, and the statuses a watcher must report for it.

Thousands of jobs interleaved: submits, executes, pilot chirps (one attribute per generic event,
values quoted, long errors cut at 1,023 characters), evictions, holds and releases, terminations,
aborts, and a truncated event at the tail. Usable as a script:
``python tests/tms/gen_event_log.py OUT.log --events 1000000 --jobs 10000``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Iterator

from tms.backends import eventlog_writer as w

CHIRP_MAX = w.CHIRP_LINE_MAX
HOLD_REASONS = [
    "Error from slot1_3@node17.example.org: Job has gone over cgroup memory limit of 4096 megabytes.",
    "Transfer input files failure at access point ap1 while sending files to the execution point.",
    "The job exceeded allowed execute duration of 3600s",
]
ERRORS = [
    "TaskFailed: exit code 1",
    "ConnectionError: broker unreachable",
    "Traceback (most recent call last): " + "x" * 2000,  # cut by HTCondor at 1,023 characters
]


def chirp(cluster: int, proc: int, attr: str, value: str, ts: float) -> tuple[str, str]:
    """The record, and the text a reader gets back: HTCondor cuts the whole line at 1,023 chars."""
    rec = w.generic(cluster, proc, f'HTChirpEWMSPilot{attr}: "{value}"', ts)
    first = rec.split("\n", 1)[0]
    return rec, first[:CHIRP_MAX][first.index("HTChirp") :]


def _value_after_cut(line: str) -> str:
    value = line.partition(": ")[2]
    return value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]


class JobModel:
    """The generator's own bookkeeping of one job (independent of tms.jobstate)."""

    def __init__(self) -> None:
        self.key = "IDLE"
        self.pilot = "None"
        self.error = ""
        self.releases = 0


def job_script(
    rng: random.Random, cluster: int, proc: int, m: JobModel, length: int, ts: float
) -> Iterator[str]:
    def t() -> float:
        return ts + rng.random() * 3600

    m.key = "IDLE"
    yield w.submit(cluster, proc, ts=ts)
    n = 1
    while n < length:
        m.key = "RUNNING"
        yield w.execute(cluster, proc, ts=t())
        n += 1
        for status in ("Started", "AwaitingFirstMessage", "Tasking"):
            rec, _ = chirp(cluster, proc, "Status", status, t())
            m.pilot = status
            yield rec
            n += 1
        while n < length - 3:
            r = rng.random()
            if r < 0.5:
                rec, _ = chirp(
                    cluster,
                    proc,
                    rng.choice(["TasksTotal", "TasksSuccess", "LastUpdatedTimestamp"]),
                    str(rng.randrange(1000)),
                    t(),
                )
                yield rec
            elif r < 0.6:
                rec, line = chirp(cluster, proc, "Error", rng.choice(ERRORS), t())
                m.error = _value_after_cut(line)
                yield rec
            elif r < 0.63:
                m.key = "IDLE"
                yield w.evicted(cluster, proc, ts=t())
                n += 1
                break
            elif r < 0.66:
                reason = rng.choice(HOLD_REASONS)
                m.key = f"HELD: {reason}"
                yield w.held(cluster, proc, reason, 34, 0, ts=t())
                n += 1
                if rng.random() < 0.3:
                    return  # stays held
                m.key = "IDLE"
                m.releases += 1
                yield w.released(cluster, proc, ts=t())
                n += 1
                break
            else:
                rec, _ = chirp(cluster, proc, "TasksFailed", str(rng.randrange(5)), t())
                yield rec
            n += 1
        else:
            break
    end = rng.random()
    if end < 0.6:
        rec, _ = chirp(cluster, proc, "Status", "Done", t())
        m.pilot = "Done"
        yield rec
        m.key = "COMPLETED"
        yield w.terminated(cluster, proc, exit_code=0, ts=t())
    elif end < 0.75:
        m.key = "REMOVED"
        yield w.aborted(cluster, proc, "via condor_rm (by user ewms)", ts=t())
    elif end < 0.8:
        m.key = "COMPLETED"
        yield w.terminated(cluster, proc, signal=9, ts=t())
    # else: still live (running / idle)


def generate(
    path: str,
    n_events: int,
    n_jobs: int,
    jobs_per_cluster: int = 1000,
    seed: int = 7,
    first_cluster: int = 5000,
) -> dict:
    """Write the log; return the expected statuses per cluster and counts."""
    rng = random.Random(seed)
    models: dict[tuple[int, int], JobModel] = {}
    scripts = []
    per_job = max(4, int(n_events / n_jobs * 2.0))  # scripts end early; make enough events
    ts0 = 1_700_000_000.0
    for j in range(n_jobs):
        cluster, proc = first_cluster + j // jobs_per_cluster, j % jobs_per_cluster
        m = models[(cluster, proc)] = JobModel()
        length = max(4, int(rng.gauss(per_job, per_job / 4)))
        scripts.append(job_script(rng, cluster, proc, m, length, ts0 + j))
    written = 0
    with open(path, "w") as f:
        buf: list[str] = []
        active = scripts[:]
        while active and written < n_events:
            i = rng.randrange(len(active))
            rec = next(active[i], None)
            if rec is None:
                active[i] = active[-1]
                active.pop()
                continue
            buf.append(rec)
            written += 1
            if len(buf) >= 10_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
        # a truncated tail: an event HTCondor was still writing when we looked
        f.write(w.generic(first_cluster, 0, 'HTChirpEWMSPilotStatus: "Done"')[:45])
    # jobs whose scripts were cut short by n_events keep the state of their last written event;
    # the models were updated lazily by the generators, so they are exact.
    expected: dict[int, Counter] = {}
    errors: dict[int, Counter] = {}
    for (cluster, _), m in models.items():
        expected.setdefault(cluster, Counter())[(m.key, m.pilot)] += 1
        if m.error:
            errors.setdefault(cluster, Counter())[m.error] += 1
    statuses = {c: _nest(cnt) for c, cnt in expected.items()}
    top = {c: dict(sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))[:10]) for c, cnt in errors.items()}
    return {"events": written, "statuses": statuses, "errors": top}


def _nest(cnt: Counter) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (key, pilot), n in sorted(cnt.items()):
        out.setdefault(key, {})[pilot] = n
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=10_000)
    a = p.parse_args()
    print(json.dumps({"events": generate(a.out, a.events, a.jobs)["events"]}))
