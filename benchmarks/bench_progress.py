"""Progress, /metrics and the cost of metrics, each beside a baseline measured in the same run.

Prints ONE JSON line on stdout (everything else goes to stderr). From the repo root:

    python benchmarks/bench_progress.py                  # 1,000 workflows, 100,000 taskforces
    python benchmarks/bench_progress.py --quick          # shorter rounds, 20,000 taskforces

Servers run as subprocesses of this script (`--serve`), built exactly as `python -m
ewms_server` builds them, on SQLite in a fresh temporary EWMS_DATA_DIR, no broker; each fills
its own store before it reports ready. With `taskset`, servers run on CPU 1 and the load
generator (`wrk`, with a Lua script picking a random workflow per request) on CPU 0.

1. progress: GET /v1/workflows/{id}/progress over 1,000 active workflows (each with task
   counts, statuses and a history), beside GET /v1/workflows/{id} (one store read) on the same
   server; and the same progress load with EWMS_PROGRESS_CACHE_S=0 (every request computes).
   Target: >= 1,000 req/s.
2. metrics: GET /metrics with EWMS_METRICS_CACHE_S=0 (every scrape counts the store) over
   100,000 taskforces (--taskforces), sequential, beside GET /v1/health on the same server.
   Target: p50 < 200 ms.
3. overhead: POST /v1/workflows with metrics on and off (EWMS_METRICS_ENABLED), in alternating
   rounds. Target: on >= 0.9 x off.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

LOCATIONS = {f"loc{i}": f"schedd-{i}" for i in range(4)}
PHASES = ["condor-submit"] * 5 + ["pending-starter", "condor-complete", "cancelled", "submit-failed"]
TARGETS = {"progress_min_rps": 1000.0, "metrics_scrape_max_ms": 200.0, "metrics_on_min_ratio_vs_off": 0.9}
WORKER_CONFIG = {
    "do_transfer_worker_stdouterr": False,
    "max_worker_runtime": 3600,
    "n_cores": 1,
    "priority": 50,
    "worker_disk": "1G",
    "worker_memory": "2G",
}


def log(*a: Any) -> None:
    print("[bench_progress]", *a, file=sys.stderr, flush=True)


def workflow_body(loc: str = "loc0") -> dict[str, Any]:
    return {
        "tasks": [
            {
                "cluster_locations": [loc],
                "task_image": "/cvmfs/example/skymap:latest",
                "task_args": "python -m skymap.reco --nside 8",
                "input_queue_aliases": ["in"],
                "output_queue_aliases": ["out"],
                "worker_config": dict(WORKER_CONFIG),
                "n_workers": 10,
            }
        ],
        "public_queue_aliases": ["in", "out"],
    }


# ============================================================================================
# the server side (--serve)
# ============================================================================================


async def _seed_workflows(deps: Any, n: int) -> list[str]:
    """n active workflows through the real create path, each with a submitted taskforce that
    has statuses, task counts and a few history samples."""
    from ewms_server.caller import Caller
    from ewms_server.ops import task_counts, workflows
    from ewms_server.ops.taskforces import update_statuses
    from ewms_server.storage.base import Change

    store, cfg = deps.store, deps.cfg
    ids, uuids = [], []
    for i in range(n):
        created = await workflows.create_workflow(
            store, cfg.cluster_locations, Caller(f"user{i % 50}", "user"), workflow_body()
        )
        ids.append(created["workflow"]["workflow_id"])
        uuids.append(created["taskforces"][0]["taskforce_uuid"])
    await store.update_where(
        "taskforces",
        {"taskforce_uuid": {"$in": uuids}},
        Change(set={"phase": "condor-submit", "cluster_id": 1}),
    )
    for step in (1, 2, 3):
        for i in range(0, n, 500):
            chunk = uuids[i : i + 500]
            body = {
                "compound_statuses_by_taskforce": {
                    u: {"RUNNING": {"Tasking": 8}, "IDLE": {"None": 2}} for u in chunk
                },
                "top_task_errors_by_taskforce": {u: {"exit code 3": step} for u in chunk},
                "task_counts_by_taskforce": {u: {"succeeded": 100 * step, "failed": step} for u in chunk},
            }
            prior = await task_counts.before(store, body)
            await update_statuses(store, body)
            await task_counts.after(store, body, prior, on_delta=None, min_interval_s=0, max_len=200)
    return ids


async def _seed_taskforces(server: Any, n: int) -> dict[str, int]:
    """n taskforces (4 per workflow, a mix of phases over 4 schedds), inserted in batches
    straight through the driver (the documents come from the real factories)."""
    from ewms_server import documents
    from ewms_server.phases import Phase

    store = server.storage
    rng = random.Random(7)
    mix: dict[str, int] = {}
    made = 0
    while made < n:
        wfs, tfs = [], []
        for _ in range(min(1000, (n - made + 3) // 4)):
            wf = documents.workflow(priority=50, owner=f"user{rng.randrange(50)}")
            if rng.random() < 0.2:
                wf["deactivated"], wf["taskforces_stopped"] = rng.choice(["ABORTED", "FINISHED"]), True
            wfs.append(wf)
            for loc, schedd in LOCATIONS.items():
                if made >= n:
                    break
                phase = rng.choice(PHASES)
                tf = documents.taskforce(
                    task_id=f"TK-{made:012x}-0000-000000",
                    workflow_id=wf["workflow_id"],
                    owner=wf["owner"],
                    priority=50,
                    cluster_location=loc,
                    schedd=schedd,
                    collector="",
                    n_workers=10,
                    pilot_config={
                        "tag": "latest",
                        "image_source": "cvmfs",
                        "environment": {},
                        "input_files": [],
                    },
                    worker_config=dict(WORKER_CONFIG),
                    phase=Phase(phase),
                    source_entity="bench",
                )
                tfs.append(tf)
                mix[phase] = mix.get(phase, 0) + 1
                made += 1
        await store.insert_bundle([("taskforces", tfs), ("workflows", wfs)])
    return mix


async def _serve(args: argparse.Namespace) -> None:
    import logging

    from ewms_server.config import Config
    from ewms_server.server import Server

    cfg = Config.from_env(os.environ)
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = Server(cfg)
    await server.start()
    info: dict[str, Any] = {"port": server.port}
    if args.seed_workflows:
        info["workflow_ids"] = await _seed_workflows(server.deps, args.seed_workflows)
    if args.seed_taskforces:
        info["phases"] = await _seed_taskforces(server, args.seed_taskforces)
    print("READY " + json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(timeout=2)


# ============================================================================================
# the orchestrator
# ============================================================================================


class Proc:
    """One server subprocess (killed in `close`)."""

    def __init__(
        self, args: argparse.Namespace, tmp: str, name: str, env: dict[str, str], serve: list[str]
    ) -> None:
        self.secret = secrets.token_urlsafe(48)
        data = os.path.join(tmp, name)
        os.makedirs(data)
        full = {
            **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
            "EWMS_REST_PORT": "0",
            "EWMS_AUTH_SECRET": self.secret,
            "EWMS_DATA_DIR": data,
            "EWMS_CLUSTER_LOCATIONS": json.dumps(LOCATIONS),
            "EWMS_LOG_LEVEL": "WARNING",
            # one benchmark user makes thousands of workflows: no per-user quota in the way
            "EWMS_USER_MAX_ACTIVE_WORKFLOWS": "0",
            "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "0",
            **env,
        }
        pin = ["taskset", "-c", "1"] if args.pin else []
        self.p = subprocess.Popen(
            [*pin, sys.executable, os.path.abspath(__file__), "--serve", *serve],
            env=full,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(tmp, f"{name}.log"), "wb"),
            text=True,
        )
        line = ""
        assert self.p.stdout is not None
        while not line.startswith("READY "):
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"server {name} died; see {tmp}/{name}.log")
        self.info = json.loads(line[len("READY ") :])
        self.port = int(self.info["port"])

    def token(self, role: str, sub: str) -> str:
        from ewms_server.auth import mint_token

        return mint_token(self.secret, sub=sub, role=role, expires_s=3600)

    def close(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def _lua(method: str, token: str, paths: list[str], body_path: str | None) -> str:
    lines = [
        f'wrk.method = "{method}"',
        f'wrk.headers["Authorization"] = "Bearer {token}"',
        'wrk.headers["Content-Type"] = "application/json"',
        "paths = {" + ",".join(json.dumps(p) for p in paths) + "}",
        "math.randomseed(7)",
    ]
    if body_path:
        lines.append(
            f'local f = assert(io.open({json.dumps(body_path)}, "rb")); wrk.body = f:read("*a"); f:close()'
        )
    lines.append(
        r"""
request = function() return wrk.format(nil, paths[math.random(#paths)]) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%.0f,"duration_us":%.0f,"non2xx":%.0f,"errors":%.0f,' ..
    '"p50_us":%.0f,"p99_us":%.0f}\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
    )
    return "\n".join(lines)


def wrk(
    args: argparse.Namespace,
    tmp: str,
    port: int,
    method: str,
    token: str,
    paths: list[str],
    body: bytes | None = None,
) -> dict[str, Any]:
    script = os.path.join(tmp, f"w{random.randrange(1 << 30)}.lua")
    body_path = None
    if body is not None:
        body_path = script + ".json"
        with open(body_path, "wb") as f:
            f.write(body)
    with open(script, "w") as f:
        f.write(_lua(method, token, paths, body_path))
    pin = ["taskset", "-c", "0"] if args.pin else []
    cmd = [
        *pin,
        "wrk",
        "-t1",
        f"-c{args.conns}",
        f"-d{args.seconds}s",
        "-s",
        script,
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCHJSON "))
    r = json.loads(line[len("BENCHJSON ") :])
    r["rps"] = round(r["requests"] / (r["duration_us"] / 1e6), 1)
    return r


def _rounds(args: argparse.Namespace, runs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Alternate the measurements round by round (a busy neighbour hits all alike); medians."""
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in runs}
    for i in range(args.rounds):
        for name in list(runs)[i % 2 :] + list(runs)[: i % 2]:
            got[name].append(runs[name]())
            log(name, got[name][-1])
    return {
        k: {
            "rps": statistics.median(r["rps"] for r in v),
            "p50_ms": statistics.median(r["p50_us"] for r in v) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in v) / 1000,
            "non2xx": sum(r["non2xx"] for r in v),
            "errors": sum(r["errors"] for r in v),
            "rounds_rps": [r["rps"] for r in v],
        }
        for k, v in got.items()
    }


def sequential_ms(port: int, path: str, token: str, n: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        body = resp.read()
        times.append((time.perf_counter() - start) * 1000)
        assert resp.status == 200, (path, resp.status, body[:200])
    conn.close()
    times.sort()
    return {
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
        "n": n,
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="ewms-bench-progress-")
    procs: list[Proc] = []
    out: dict[str, Any] = {
        "benchmark": "bench_progress",
        "machine": {
            "cpus": os.cpu_count(),
            "load_generator": "wrk",
            "pinned": args.pin,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],  # a shared machine
        },
        "targets": TARGETS,
    }
    try:
        # 1. progress over 1,000 active workflows, cached and not, beside a one-read GET
        log(f"seeding {args.workflows} workflows (twice: cached and uncached servers)")
        cached = Proc(
            args, tmp, "cached", {"EWMS_PROGRESS_CACHE_S": "5"}, ["--seed-workflows", str(args.workflows)]
        )
        procs.append(cached)
        uncached = Proc(
            args, tmp, "uncached", {"EWMS_PROGRESS_CACHE_S": "0"}, ["--seed-workflows", str(args.workflows)]
        )
        procs.append(uncached)
        admin_c, admin_u = cached.token("admin", "root"), uncached.token("admin", "root")
        ids_c, ids_u = cached.info["workflow_ids"], uncached.info["workflow_ids"]
        progress = _rounds(
            args,
            {
                "progress_cached": lambda: wrk(
                    args, tmp, cached.port, "GET", admin_c, [f"/v1/workflows/{w}/progress" for w in ids_c]
                ),
                "baseline_get_workflow": lambda: wrk(
                    args, tmp, cached.port, "GET", admin_c, [f"/v1/workflows/{w}" for w in ids_c]
                ),
                "progress_uncached": lambda: wrk(
                    args, tmp, uncached.port, "GET", admin_u, [f"/v1/workflows/{w}/progress" for w in ids_u]
                ),
            },
        )
        out["progress"] = {"workflows": args.workflows, "conns": args.conns, **progress}
        for p in (cached, uncached):
            p.close()
            procs.remove(p)

        # 2. a /metrics scrape over many taskforces, counted on every scrape
        log(f"seeding {args.taskforces} taskforces")
        t0 = time.monotonic()
        big = Proc(
            args, tmp, "big", {"EWMS_METRICS_CACHE_S": "0"}, ["--seed-taskforces", str(args.taskforces)]
        )
        procs.append(big)
        log(f"seeded in {time.monotonic() - t0:.1f} s")
        admin = big.token("admin", "root")
        sequential_ms(big.port, "/metrics", admin, 3)  # warm the page cache
        out["metrics_scrape"] = {
            "taskforces": args.taskforces,
            "phases": big.info["phases"],
            "metrics_uncached": sequential_ms(big.port, "/metrics", admin, args.scrapes),
            "baseline_health": sequential_ms(big.port, "/v1/health", admin, args.scrapes),
        }
        big.close()
        procs.remove(big)

        # 3. throughput with metrics on and off
        on = Proc(args, tmp, "on", {"EWMS_METRICS_ENABLED": "true"}, [])
        off = Proc(args, tmp, "off", {"EWMS_METRICS_ENABLED": "false"}, [])
        procs += [on, off]
        body = json.dumps(workflow_body()).encode()
        tput = _rounds(
            args,
            {
                "post_workflows_metrics_on": lambda: wrk(
                    args, tmp, on.port, "POST", on.token("user", "alice"), ["/v1/workflows"], body
                ),
                "post_workflows_metrics_off": lambda: wrk(
                    args, tmp, off.port, "POST", off.token("user", "alice"), ["/v1/workflows"], body
                ),
            },
        )
        out["metrics_overhead"] = tput
    finally:
        for p in procs:
            p.close()
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = (
        out["metrics_overhead"]["post_workflows_metrics_on"]["rps"]
        / out["metrics_overhead"]["post_workflows_metrics_off"]["rps"]
    )
    out["summary"] = {
        "progress_cached_rps": out["progress"]["progress_cached"]["rps"],
        "progress_uncached_rps": out["progress"]["progress_uncached"]["rps"],
        "baseline_get_workflow_rps": out["progress"]["baseline_get_workflow"]["rps"],
        "metrics_scrape_p50_ms": out["metrics_scrape"]["metrics_uncached"]["p50_ms"],
        "health_p50_ms": out["metrics_scrape"]["baseline_health"]["p50_ms"],
        "metrics_on_vs_off_ratio": round(ratio, 3),
    }
    out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    s = out["summary"]
    refused = sum(
        v["non2xx"] + v["errors"]
        for part in ("progress", "metrics_overhead")
        for v in out[part].values()
        if isinstance(v, dict)
    )
    assert not refused, f"{refused} request(s) failed: the figures would measure refusals"
    out["targets_met"] = {
        "progress_min_rps": s["progress_cached_rps"] >= TARGETS["progress_min_rps"],
        "metrics_scrape_max_ms": s["metrics_scrape_p50_ms"] < TARGETS["metrics_scrape_max_ms"],
        "metrics_on_min_ratio_vs_off": ratio >= TARGETS["metrics_on_min_ratio_vs_off"],
    }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed-workflows", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--seed-taskforces", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="3 s rounds, 20,000 taskforces")
    p.add_argument("--workflows", type=int, default=1000)
    p.add_argument("--taskforces", type=int, default=None, help="default 100,000 (20,000 with --quick)")
    p.add_argument(
        "--seconds", type=int, default=None, help="seconds per wrk round (default 8, 3 with --quick)"
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--scrapes", type=int, default=30)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args))
        return 0
    if not shutil.which("wrk"):
        log("wrk is needed (apt-get install wrk)")
        return 2
    args.pin = args.pin and bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
    args.taskforces = args.taskforces or (20_000 if args.quick else 100_000)
    args.seconds = args.seconds or (3 if args.quick else 8)
    print(json.dumps(orchestrate(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
