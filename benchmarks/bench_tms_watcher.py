"""Watcher throughput over a generated job event log (>= 1,000,000 events, 10,000 jobs).

Prints ONE JSON line: the raw htcondor2.JobEventLog iteration rate, a minimal loop reading only
each event's type/cluster/proc (+ a generic event's text), and the TMS watcher's rate on the same
file, plus the watcher's retained memory (tracemalloc, after the pass) and peak RSS.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import htcondor2  # noqa: E402

from tests.tms.gen_event_log import generate  # noqa: E402
from tms.tracking import Registry  # noqa: E402
from tms.watcher import HoldPolicy, Watcher, WatcherDeps  # noqa: E402


def raw_rate(path: str) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    for _ in htcondor2.JobEventLog(path).events(0):
        n += 1
    return n, n / (time.perf_counter() - t)


def minimal_rate(path: str) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    generic = htcondor2.JobEventType.GENERIC
    for ev in htcondor2.JobEventLog(path).events(0):
        etype, _cluster, _proc = ev.type, ev.cluster, ev.proc
        if etype == generic:
            ev.get("Info")
        n += 1
    return n, n / (time.perf_counter() - t)


class NullClient:
    async def send_statuses(self, compound: dict, errors: dict) -> None:
        self.sent = len(compound)

    async def confirm_complete(self, uuid: str, ts: int) -> None:
        pass


def watcher_rate(path: str, clusters: list[int], jobs_per_cluster: int) -> tuple[int, float, int]:
    reg = Registry()
    for c in clusters:
        reg.track(f"TF-{c}", c, jobs_per_cluster, path)
    watcher = Watcher(WatcherDeps(NullClient(), None, reg, 1.0, HoldPolicy(2, 1e12)))  # type: ignore[arg-type]

    async def one_pass() -> int:
        n = await watcher.read_logs()
        await watcher.send_statuses()
        return n

    t = time.perf_counter()
    n = asyncio.run(one_pass())
    rate = n / (time.perf_counter() - t)
    # memory the watcher keeps after reading everything: job state only, not events
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    reg2 = Registry()
    for c in clusters:
        reg2.track(f"TF-{c}", c, jobs_per_cluster, path)
    w2 = Watcher(WatcherDeps(NullClient(), None, reg2, 1.0, HoldPolicy(2, 1e12)))  # type: ignore[arg-type]
    follower_n = 0
    from tms.follower import LogFollower

    f = LogFollower(path)
    groups = {c: reg2.by_uuid[f"TF-{c}"].state for c in clusters}
    while k := f.pump(groups, 50_000):
        follower_n += k
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    f.close()
    w2.close()
    del before
    return n, rate, peak


def main() -> None:
    n_events = int(os.environ.get("BENCH_EVENTS", 1_050_000))
    n_jobs = int(os.environ.get("BENCH_JOBS", 10_000))
    per_cluster = 1000
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.log")
        expected = generate(path, n_events, n_jobs, jobs_per_cluster=per_cluster)
        clusters = sorted(expected["statuses"])
        n_raw, raw = raw_rate(path)
        _, minimal = minimal_rate(path)
        n_w, watcher, traced_peak = watcher_rate(path, clusters, per_cluster)
        print(
            json.dumps(
                {
                    "benchmark": "tms_watcher",
                    "events": n_raw,
                    "jobs": n_jobs,
                    "log_mb": round(os.path.getsize(path) / 1e6, 1),
                    "raw_jobeventlog_events_per_s": round(raw),
                    "minimal_loop_events_per_s": round(minimal),
                    "watcher_events_per_s": round(watcher),
                    "watcher_vs_minimal": round(watcher / minimal, 3),
                    "watcher_events_read": n_w,
                    "watcher_tracemalloc_peak_mb": round(traced_peak / 1e6, 2),
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                    "target_ratio": 0.8,
                }
            )
        )


if __name__ == "__main__":
    main()
