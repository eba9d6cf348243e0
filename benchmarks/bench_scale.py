"""The scale row of issue 8: the default store with 100,000 taskforces beside 10,000.

Prints ONE JSON line on stdout (progress on stderr). Run from the repo root:

    python benchmarks/bench_scale.py            # 10,000 and 100,000 taskforces (~3 min)
    python benchmarks/bench_scale.py --quick    # shorter measurements

For each size, in the same run and the same way:
- seed: the documents are built by the server's own create (`ops.workflows.create_workflow`) with
  bench_server's mix of phase histories (2 taskforces per workflow; 100 pending-starter at the
  target schedd, a quarter running, most complete) and inserted in bundles through the SQLite
  driver (`insert_bundle`), not over HTTP: fast, and the same rows the server would write;
- start-up: `python -m ewms_server` (the real main: migrations, loops, gc freeze) on that
  data directory, timed from spawn to the first 200 of /v1/health (also on an empty store,
  the floor: Python's imports);
- GET /v1/tms/pending-starter at the target schedd (EWMS_STARTER_LEASE_S=0: every request
  leases and returns the top taskforce), 8 connections and 1, each beside the bare Tornado
  handler of bench_server, alternating, with bench_server's load generator and CPU pinning;
- the server's RSS after the load (VmRSS, and its peak VmHWM), and the store's size on disk
  (ewms.sqlite3 and its -wal/-shm) after the load, and once the server has stopped.
Targets: the 100,000 rate within 20 % of the 10,000 rate; start-up < 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for p in (REPO, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import bench_server as bs  # noqa: E402

TARGETS = {"rate_100k_min_ratio_vs_10k": 0.8, "start_max_s": 5.0}
BUNDLE = 1000


def log(*a: Any) -> None:
    print("[bench_scale]", *a, file=sys.stderr, flush=True)


async def seed(data_dir: str, n_taskforces: int, pending_at_target: int) -> dict[str, Any]:
    from ewms_server.caller import Caller
    from ewms_server.config import parse_locations
    from ewms_server.ops.workflows import create_workflow
    from ewms_server.storage import DB_FILE, make_data_dir
    from ewms_server.storage.sqlite import SQLiteStorage

    locations = parse_locations(json.dumps(bs.LOCATIONS))
    store = SQLiteStorage(os.path.join(make_data_dir(data_dir), DB_FILE))
    await store.migrate()
    rng = random.Random(7)
    counts, classes = bs.seed_classes(n_taskforces, pending_at_target, rng)
    now, n_recent_finished = time.time(), 0
    recorder = _Recorder()
    user = Caller("alice", "user")
    t0 = time.perf_counter()
    for i, cls in enumerate(classes):
        body = bs.workflow_body(bs.seed_locations(i, cls), rng.choice([50] * 8 + [20, 80]), str(i))
        made = await create_workflow(recorder, locations, user, body)  # type: ignore[arg-type]
        recent = cls != "condor-complete" or n_recent_finished < 200
        n_recent_finished += cls == "condor-complete" and recent
        tf_set, entries, wf_set = bs.seed_history(cls, 100_000 + i, now, recent)
        for tf in made["taskforces"]:
            tf.update(tf_set)
            tf["phase_change_log"] = [*tf["phase_change_log"], *entries]
        made["workflow"].update(wf_set)
        for mq in recorder.last["mqprofiles"]:
            mq["is_activated"] = not wf_set
        if len(recorder.pending["workflows"]) >= BUNDLE:
            await store.insert_bundle(recorder.take())
    await store.insert_bundle(recorder.take())
    seed_s = time.perf_counter() - t0
    mix = await bs.seed_mix(store)
    await store.close()
    return {"seconds": round(seed_s, 1), "workflows": len(classes), "workflow_classes": counts, **mix}


class _Recorder:
    """Stands in for the store in `create_workflow` (so the rows are the server's own), keeping
    each create's documents to insert them in large bundles."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Any]] = {
            c: [] for c in ("taskforces", "task_directives", "mqprofiles", "workflows")
        }
        self.last: dict[str, list[Any]] = {}

    async def insert_bundle(self, bundle: Any) -> None:
        self.last = {coll: list(docs) for coll, docs in bundle}
        for coll, docs in bundle:
            self.pending[coll].extend(docs)

    def take(self) -> list[tuple[str, list[Any]]]:
        out = [(c, docs) for c, docs in self.pending.items() if docs]
        self.pending = {c: [] for c in self.pending}
        return out


class Server:
    """`python -m ewms_server` on a data directory (duck-types bench_server.Proc for Load)."""

    def __init__(self, name: str, data_dir: str, env: dict[str, str], logdir: str, pin: bool) -> None:
        self.name, self.data_dir = name, data_dir
        self.port = _free_port()
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.logf = open(self.logpath, "wb")
        prefix = ["taskset", "-c", "1"] if pin else []
        t0 = time.monotonic()
        self.p = subprocess.Popen(
            [*prefix, sys.executable, "-m", "ewms_server"],
            env={**env, "EWMS_DATA_DIR": data_dir, "EWMS_REST_PORT": str(self.port)},
            stdout=self.logf,
            stderr=self.logf,
            cwd=REPO,
        )
        self.start_s = self._wait_healthy(t0, 120)

    def _wait_healthy(self, t0: float, timeout: float) -> float:
        while time.monotonic() - t0 < timeout:
            if self.p.poll() is not None:
                break
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/v1/health")
                if c.getresponse().status == 200:
                    c.close()
                    return round(time.monotonic() - t0, 3)
                c.close()
            except OSError:
                pass
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.name} did not start; see {self.logpath}")

    def memory_kib(self) -> dict[str, int]:
        with open(f"/proc/{self.p.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _store_bytes(data_dir: str) -> dict[str, int]:
    files = {
        os.path.basename(f): os.path.getsize(f) for f in glob.glob(os.path.join(data_dir, "ewms.sqlite3*"))
    }
    return {"total": sum(files.values()), **files}


def measure(
    n: int, args: argparse.Namespace, load: bs.Load, bare: bs.Proc, env: dict[str, str], tms: str, tmp: str
) -> dict[str, Any]:
    data_dir = os.path.join(tmp, f"store-{n}")
    log(f"seeding {n} taskforces...")
    seeded = asyncio.run(seed(data_dir, n, args.pending_at_target))
    log(f"seeded in {seeded['seconds']} s; starting the server on it")
    srv = Server(f"ours-{n}", data_dir, env, tmp, args.pin)
    try:
        path = f"/v1/tms/pending-starter/taskforces?schedd={bs.TARGET_SCHEDD}"
        c = bs.Client(srv.port)
        status, got = c.req("GET", path, tms)
        c.close()
        assert status == 200 and got["taskforce"]["schedd"] == bs.TARGET_SCHEDD, (status, got)
        auth = {"Authorization": f"Bearer {tms}"}
        rate, bare_rate = load.pair(
            f"pending-starter, {n}", srv, bare, path, "GET", auth, None, args.connections
        )  # type: ignore[arg-type]
        one, bare_one = load.pair(
            f"pending-starter, {n}, 1 connection", srv, bare, path, "GET", auth, None, 1
        )  # type: ignore[arg-type]
        memory = srv.memory_kib()
        running = _store_bytes(data_dir)
    finally:
        srv.stop()
    return {
        "taskforces": seeded["taskforces"],
        "seed": {k: seeded[k] for k in ("seconds", "workflows", "workflow_classes")},
        "start_s": srv.start_s,
        "pending_starter": rate,
        "bare_tornado": bare_rate,
        "ratio_vs_bare": round(rate["rps"] / bare_rate["rps"], 3),
        "pending_starter_1_connection": one,
        "bare_tornado_1_connection": bare_one,
        "rss_mib": round(memory["VmRSS"] / 1024, 1),
        "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        "store_mib_while_serving": {k: round(v / 2**20, 1) for k, v in running.items()},
        "store_mib_stopped": {k: round(v / 2**20, 1) for k, v in _store_bytes(data_dir).items()},
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    from ewms_server.auth import mint_token

    if args.pin and not (os.cpu_count() or 1) >= 2:
        args.pin = False
    if args.pin:
        os.sched_setaffinity(0, {0})
    secret = secrets.token_urlsafe(48)
    every_schedd = [v if isinstance(v, str) else v["schedd"] for v in bs.LOCATIONS.values()]
    tms = mint_token(secret, sub="bench-tms", role="system-tms", expires_s=86400, schedds=every_schedd)
    base = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    base["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {
        **base,
        "EWMS_AUTH_SECRET": secret,
        "EWMS_REST_HOST": "127.0.0.1",
        "EWMS_CLUSTER_LOCATIONS": json.dumps(bs.LOCATIONS),
        "EWMS_STARTER_LEASE_S": "0",
        "EWMS_LOG_LEVEL": "INFO",
    }
    out: dict[str, Any] = {
        "benchmark": "bench_scale",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        load = bs.Load(args, tmp)
        out["generator"] = load.describe()
        out["config"] = {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "connections": args.connections,
            "pending_at_target": args.pending_at_target,
            "cpu_pinning": "servers on CPU 1, load generator on CPU 0" if args.pin else "none",
            "store": "SQLite, the default (synchronous=NORMAL)",
        }
        empty = Server("ours-empty", os.path.join(tmp, "empty"), env, tmp, args.pin)
        empty.stop()
        out["start_s_empty_store"] = empty.start_s
        bare = bs.Proc("bare", ["--_serve", "bare"], base, tmp, args.pin)
        try:
            bare.wait_ready(30)
            out["sizes"] = {str(n): measure(n, args, load, bare, env, tms, tmp) for n in args.sizes}
        finally:
            bare.stop()
    small, big = (out["sizes"][str(n)] for n in (min(args.sizes), max(args.sizes)))
    ratio = big["pending_starter"]["rps"] / small["pending_starter"]["rps"]
    ratio_vs_bare = big["ratio_vs_bare"] / small["ratio_vs_bare"]
    out["rate_ratio_big_vs_small"] = round(ratio, 3)
    out["rate_ratio_big_vs_small_each_vs_its_bare"] = round(ratio_vs_bare, 3)
    out["targets"] = TARGETS
    out["targets_met"] = {
        "rate_within_20pct": ratio >= TARGETS["rate_100k_min_ratio_vs_10k"],
        "start_lt_5s": big["start_s"] < TARGETS["start_max_s"],
    }
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 s per measurement, one round")
    ap.add_argument("--sizes", default="10000,100000", help="taskforce counts, comma-separated")
    ap.add_argument("--duration", type=float, default=None, help="seconds per measurement (default 6)")
    ap.add_argument("--rounds", type=int, default=None, help="ours/bare alternations (default 2)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--pending-at-target", type=int, default=100)
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    args = ap.parse_args()
    args.sizes = sorted(int(x) for x in args.sizes.split(","))
    args.duration = args.duration or (2.0 if args.quick else 6.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.warmup, args.threads = 1.0, 1
    t0 = time.monotonic()
    out = orchestrate(args)
    out["wall_s"] = round(time.monotonic() - t0, 1)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
