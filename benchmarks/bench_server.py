"""HTTP throughput and latency of the EWMS server, each beside a bare Tornado handler.

Prints ONE JSON line on stdout (everything else goes to stderr). Run from the repo root:

    python benchmarks/bench_server.py            # full: 10 s per measurement (~2-3 min)
    python benchmarks/bench_server.py --quick    # 2 s per measurement

What runs (all on 127.0.0.1, bounded in time, every subprocess killed in `finally`):
- "ours": a subprocess of this script that builds `ewms_server.server.Server` exactly as
  `python -m ewms_server` does (same Config.from_env, same logs.configure at
  EWMS_LOG_LEVEL, so Tornado's access log is on at INFO like in production), on the default
  durable store (SQLite in a fresh temporary EWMS_DATA_DIR, EWMS_SQLITE_SYNCHRONOUS from
  --synchronous), no broker. A seeded instance fills its own store BEFORE it reports ready,
  inside its own process and event loop, through the real code paths:
  `ops.workflows.create_workflow` for every workflow, then checked storage `update_where` /
  `transition` calls that move each workflow's taskforces along a realistic phase history (log
  entries, cluster ids, statuses, workflow deactivation flags). No HTTP seeding endpoint.
  Then `freeze_heap()`, as `python -m ewms_server` does once started.
- "bare": a subprocess with one Tornado RequestHandler doing `self.write({})` for GET and POST,
  same Tornado, same logging setup.
- the load generator: `wrk` (1 thread, N connections, Lua script adds the Authorization header
  and POST body and prints latency percentiles), or, if wrk is missing or `--generator python`,
  an asyncio raw-socket keep-alive client in a separate process. The JSON says which.
- The 2 cores are split (unless --no-pin): servers on CPU 1, load generator on CPU 0.
- Ours and bare alternate round by round (--rounds, default 2 x 5 s each in full mode), each
  round after a 1 s warm-up, so a neighbour's CPU use hits both alike; every result carries
  `other_processes_busy_cores`: CPU used on the machine by processes outside this benchmark
  during that measurement (from /proc/stat), so a disturbed number can be recognised.

Measurements:
1. GET /v1/tms/pending-starter/taskforces?schedd=<target>: empty database, then the seeded one
   (default 10,000 taskforces; mix reported from the store itself). The seeded server runs with
   EWMS_STARTER_LEASE_S=0 so every GET leases and returns a taskforce (steady state: the same
   highest-priority one keeps being chosen among the pending-starter set at the target schedd,
   so each request does the full select-sort-update-export work).
2. POST /v1/workflows (1 task, 1 location, 2 queues), on the seeded server (the store grows
   during the run; the background loops activate and release what is created, as in service).
3. POST /v1/tms/statuses/taskforces with 100 condor-submit taskforces of the target schedd
   (compound_statuses + top_task_errors): 1 connection, sequential calls like one TMS.
4. POST /v1/workflows returning -> taskforce offered at pending-starter (Python http.client,
   keep-alive, polling every 2 ms), on a schedd with nothing else pending; each offered
   taskforce is then condor-submitted, like a TMS would.
Each is paired with the bare handler under the same generator and connection count.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import secrets
import selectors
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

TARGET_LOC, TARGET_SCHEDD = "a", "schedd-a"
LAT_LOC, LAT_SCHEDD = "lat", "schedd-lat"
LOCATIONS = {
    "a": "schedd-a",
    "b": {"schedd": "schedd-b", "collector": "cm-b"},
    "c": {"schedd": "schedd-c", "collector": "cm-c"},
    "d": {"schedd": "schedd-d", "collector": "cm-d"},
    LAT_LOC: LAT_SCHEDD,
}
SEED_LOCS = ["a", "b", "c", "d"]
PAIRS = [("a", "b"), ("c", "d"), ("a", "c"), ("b", "d"), ("a", "d"), ("b", "c")]
WORKER_CONFIG = {
    "do_transfer_worker_stdouterr": True,
    "max_worker_runtime": 3600,
    "n_cores": 1,
    "priority": 50,
    "worker_disk": "1G",
    "worker_memory": "2G",
}
TARGETS = {  # issue 8, on the durable default store
    "pending_starter_min_ratio_vs_bare": 0.5,
    "pending_starter_max_p99_ms": 2.0,
    "post_workflows_min_rps": 600.0,
    "statuses_max_ms_per_taskforce": 0.1,
    "post_to_pending_starter_max_p50_ms": 50.0,
}
ORIGINAL = {"pending_starter_empty_db_rps": 501.0, "post_workflows_rps": 23.5}
IN_MEMORY_ENGINE = {  # the removed in-memory engine, same benchmark (closing note of stop 6)
    "pending_starter_10k_rps": 1413.9,
    "bare_tornado_rps_beside_it": 1977.7,
    "post_workflows_rps": 772.9,
}


def log(*a: Any) -> None:
    print("[bench_server]", *a, file=sys.stderr, flush=True)


def workflow_body(locations: list[str], priority: int | None = None, tag: str = "x") -> dict[str, Any]:
    """1 task at the given locations, queues in -> out (2 queues), like tests/conftest.py."""
    body: dict[str, Any] = {
        "tasks": [
            {
                "cluster_locations": list(locations),
                "task_image": "/cvmfs/icecube.opensciencegrid.org/containers/skymap:latest",
                "task_args": f"python -m skymap.reco --event {tag} --nside 8",
                "input_queue_aliases": ["in"],
                "output_queue_aliases": ["out"],
                "worker_config": dict(WORKER_CONFIG),
                "n_workers": 100,
            }
        ],
        "public_queue_aliases": ["in", "out"],
    }
    if priority is not None:
        body["priority"] = priority
    return body


def statuses_body(uuids: list[str]) -> dict[str, Any]:
    return {
        "compound_statuses_by_taskforce": {
            u: {
                "RUNNING": {"Tasking": 40 + i % 7, "IdleAfterTasking": 3},
                "IDLE": {"null": 50 - i % 7},
                "HELD: Memory usage exceeded request_memory": {"FatalError": 1},
            }
            for i, u in enumerate(uuids)
        },
        "top_task_errors_by_taskforce": {
            u: {
                "ValueError: reco did not converge": 2 + i % 3,
                "OSError: [Errno 28] No space left on device": 1,
            }
            for i, u in enumerate(uuids)
        },
    }


# ============================================================================================
# server subprocesses
# ============================================================================================


def _emit_ready(info: dict[str, Any]) -> None:
    sys.stdout.write("READY " + json.dumps(info) + "\n")
    sys.stdout.flush()


def seed_classes(
    n_taskforces: int, pending_at_target: int, rng: random.Random
) -> tuple[dict[str, int], list[str]]:
    """The mix of workflows (2 taskforces each) by where their taskforces ended up, shuffled."""
    n_wf = n_taskforces // 2
    counts = {
        "pending-starter": pending_at_target,
        "condor-submit": int(n_wf * 0.24),
        "pending-stopper": int(n_wf * 0.01),
        "condor-rm": int(n_wf * 0.01),
        "cancelled": int(n_wf * 0.02),
        "submit-failed": int(n_wf * 0.01),
    }
    counts["condor-complete"] = n_wf - sum(counts.values())  # whatever is left
    if counts["condor-complete"] < 0:
        raise SystemExit("--pending-at-target too large for --taskforces")
    classes = [c for c, n in counts.items() for _ in range(n)]
    rng.shuffle(classes)
    return counts, classes


def seed_locations(i: int, cls: str) -> list[str]:
    if cls == "pending-starter":
        return [TARGET_LOC, ["b", "c", "d"][i % 3]]
    return list(PAIRS[i % len(PAIRS)])


def seed_history(
    cls: str, cluster: int, now: float, recent: bool
) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """For a workflow of class `cls`: what its taskforces get set, the log entries appended
    after creation, and what its workflow gets set (empty while it runs)."""
    from ewms_server import documents
    from ewms_server.phases import Phase as P

    tms, lc, mq, user = "system-tms:bench-tms", "server:launch-control", "server:mq-activation", "user:alice"
    chain = {
        "pending-starter": [P.PRE_LAUNCH, P.PENDING_STARTER],
        "condor-submit": [P.PRE_LAUNCH, P.PENDING_STARTER, P.CONDOR_SUBMIT],
        "pending-stopper": [P.PRE_LAUNCH, P.PENDING_STARTER, P.CONDOR_SUBMIT, P.PENDING_STOPPER],
        "condor-rm": [P.PRE_LAUNCH, P.PENDING_STARTER, P.CONDOR_SUBMIT, P.PENDING_STOPPER, P.CONDOR_RM],
        "condor-complete": [P.PRE_LAUNCH, P.PENDING_STARTER, P.CONDOR_SUBMIT, P.CONDOR_COMPLETE],
        "cancelled": [P.PRE_LAUNCH, P.PENDING_STARTER, P.CANCELLED],
        "submit-failed": [P.PRE_LAUNCH, P.PENDING_STARTER, P.SUBMIT_FAILED],
    }[cls]
    who = {P.PRE_LAUNCH: mq, P.PENDING_STARTER: lc, P.PENDING_STOPPER: user, P.CANCELLED: user}
    entries = [
        documents.log_entry(target_phase=p, was_successful=True, source_entity=who.get(p, tms)) for p in chain
    ]
    tf_set: dict[str, Any] = {"phase": str(chain[-1])}
    if P.CONDOR_SUBMIT in chain:
        tf_set.update(
            cluster_id=cluster,
            n_workers=100,
            submit_dict={
                "executable": "/bin/bash",
                "request_cpus": "1",
                "request_memory": "2G",
                "+FileSystemDomain": "blah",
                "transfer_input_files": "",
                "queue": 100,
            },
            job_event_log_fpath=f"/scratch/ewms/tms/{time.strftime('%Y-%m-%d')}/ewms-jel.log",
            compound_statuses={"RUNNING": {"Tasking": 60}, "IDLE": {"null": 40}},
            top_task_errors={"ValueError: reco did not converge": 3},
            statuses_ts=now,
        )
    if cls == "condor-complete":
        tf_set["condor_complete_ts"] = now
    if cls == "submit-failed":
        tf_set["n_failed_submits"] = 3
    wf_set: dict[str, Any] = {}
    if cls in ("pending-stopper", "condor-rm", "condor-complete", "cancelled"):
        wf_set = {
            "deactivated": "FINISHED" if cls == "condor-complete" else "ABORTED",
            "deactivated_ts": now,
            "taskforces_stopped": True,
            "queues_revoked": True,
            "queues_deleted": not recent,  # queues are kept for the grace period
        }
    return tf_set, entries, wf_set


async def seed_mix(store: Any) -> dict[str, Any]:
    """What the READY line and bench_scale report about a seeded store."""
    from ewms_server.phases import Phase as P

    mix: dict[str, dict[str, int]] = {}
    for tf in await store.find("taskforces", {}, projection=["schedd", "phase"]):
        by = mix.setdefault(tf["schedd"], {})
        by[tf["phase"]] = by.get(tf["phase"], 0) + 1
    target_running = await store.find(
        "taskforces",
        {"schedd": TARGET_SCHEDD, "phase": str(P.CONDOR_SUBMIT)},
        projection=["taskforce_uuid"],
        limit=100,
    )
    return {
        "taskforces": sum(sum(v.values()) for v in mix.values()),
        "mix_by_schedd_phase": {k: dict(sorted(v.items())) for k, v in sorted(mix.items())},
        "target_condor_submit_uuids": [t["taskforce_uuid"] for t in target_running],
    }


async def _seed(
    store: Any, cfg: Any, n_taskforces: int, pending_at_target: int, rng: random.Random
) -> dict[str, Any]:
    """Fill the store through create_workflow + checked updates; return what the READY line reports."""
    from ewms_server.caller import Caller
    from ewms_server.ops.workflows import create_workflow
    from ewms_server.storage.base import Change

    user = Caller("alice", "user")
    counts, classes = seed_classes(n_taskforces, pending_at_target, rng)
    now = time.time()
    n_recent_finished = 0
    t0 = time.perf_counter()
    for i, cls in enumerate(classes):
        prio = rng.choice([50] * 8 + [20, 80])
        body = workflow_body(seed_locations(i, cls), prio, str(i))
        created = await create_workflow(store, cfg.cluster_locations, user, body)
        wid = created["workflow"]["workflow_id"]
        recent = cls != "condor-complete" or n_recent_finished < 200
        n_recent_finished += cls == "condor-complete" and recent
        tf_set, entries, wf_set = seed_history(cls, 100_000 + i, now, recent)
        await store.update_where(
            "taskforces", {"workflow_id": wid}, Change(set=tf_set, push={"phase_change_log": entries})
        )
        await store.update_where("mqprofiles", {"workflow_id": wid}, Change(set={"is_activated": not wf_set}))
        if wf_set:
            await store.transition("workflows", {"workflow_id": wid}, Change(set=wf_set))
    seed_s = time.perf_counter() - t0
    return {
        "seed_s": round(seed_s, 2),
        "workflows": len(classes),
        "workflow_classes": counts,
        **await seed_mix(store),
    }


async def _serve_ours(args: argparse.Namespace) -> None:
    from ewms_server import logs
    from ewms_server.config import Config
    from ewms_server.server import Server, freeze_heap

    cfg = Config.from_env(os.environ)
    logs.configure(cfg.log_level)
    server = Server(cfg)
    await server.start()  # listening from here, but nobody knows the port until READY
    info: dict[str, Any] = {"port": server.port}
    if args.seed:
        # the background loops may run between these writes; they only move pre-mq-activation and
        # pre-launch taskforces along (compare-and-set), which the seed overwrites anyway
        info.update(await _seed(server.deps.store, cfg, args.seed, args.pending_at_target, random.Random(7)))
    freeze_heap()  # as `python -m ewms_server` does once started
    _emit_ready(info)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop(timeout=2)


async def _serve_bare(args: argparse.Namespace) -> None:
    import logging

    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    logging.basicConfig(
        level=os.environ.get("EWMS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    class Bare(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({})

        def post(self) -> None:
            self.write({})

    app = tornado.web.Application([(r"/.*", Bare)])
    http = tornado.httpserver.HTTPServer(app)
    socks = tornado.netutil.bind_sockets(0, "127.0.0.1")
    http.add_sockets(socks)
    _emit_ready({"port": socks[0].getsockname()[1]})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    http.stop()


# ============================================================================================
# load generators
# ============================================================================================


def _lua(method: str, headers: dict[str, str], body_path: str | None) -> str:
    lines = [f'wrk.method = "{method}"']
    for k, v in headers.items():
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    if body_path:
        lines.append(
            f'local f = assert(io.open({json.dumps(body_path)}, "rb")); wrk.body = f:read("*a"); f:close()'
        )
    lines.append(r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%.0f,"duration_us":%.0f,"errors_connect":%.0f,"errors_read":%.0f,' ..
    '"errors_write":%.0f,"errors_status":%.0f,"errors_timeout":%.0f,"mean_us":%.1f,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"max_us":%.0f}\n', summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
""")
    return "\n".join(lines)


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_now(pid: int | None) -> tuple[float, float, float] | None:
    """(machine busy jiffies, server jiffies, this process + waited children jiffies); None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
        srv = 0.0
        if pid:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            srv = float(int(fields[11]) + int(fields[12]))
        t = os.times()
        return float(busy), srv, (t.user + t.system + t.children_user + t.children_system) * _HZ
    except (OSError, ValueError, IndexError):
        return None


class Load:
    def __init__(self, args: argparse.Namespace, tmp: str) -> None:
        self.args, self.tmp = args, tmp
        self.kind = args.generator
        if self.kind == "auto":
            self.kind = "wrk" if shutil.which("wrk") else "python"
        self.pin_gen = ["taskset", "-c", "0"] if args.pin else []
        self.n = 0

    def describe(self) -> str:
        if self.kind == "wrk":
            out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
            return f"wrk ({out.split(' Copyright')[0].strip()})"
        return "python asyncio raw-socket keep-alive client (separate process)"

    def run(
        self,
        port: int,
        path: str,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
        conns: int,
        duration: float,
        pid: int | None = None,
    ) -> dict[str, Any]:
        self.n += 1
        body_path = None
        if body is not None:
            body_path = os.path.join(self.tmp, f"body{self.n}.json")
            with open(body_path, "wb") as f:
                f.write(body)
        url = f"http://127.0.0.1:{port}{path}"
        secs = max(1, round(duration))
        if self.kind == "wrk":
            script = os.path.join(self.tmp, f"s{self.n}.lua")
            with open(script, "w") as f:
                f.write(_lua(method, headers, body_path))
            cmd = [
                *self.pin_gen,
                "wrk",
                "-t",
                str(self.args.threads),
                "-c",
                str(conns),
                "-d",
                f"{secs}s",
                "--timeout",
                "5s",
                "-s",
                script,
                url,
            ]
        else:
            spec = {
                "port": port,
                "path": path,
                "method": method,
                "headers": headers,
                "body_path": body_path,
                "conns": conns,
                "duration": secs,
            }
            cmd = [*self.pin_gen, sys.executable, os.path.abspath(__file__), "--_loadgen", json.dumps(spec)]
        c0, t0 = _cpu_now(pid), time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
        c1, elapsed = _cpu_now(pid), time.monotonic() - t0
        other = None
        if c0 and c1:  # CPU used on this machine by processes that are not part of this benchmark
            other = ((c1[0] - c0[0]) - (c1[1] - c0[1]) - (c1[2] - c0[2])) / _HZ / elapsed
        for line in proc.stdout.splitlines():
            if line.startswith("BENCHJSON "):
                raw = json.loads(line[len("BENCHJSON ") :])
                break
        else:
            raise RuntimeError(
                f"load generator gave no result: rc={proc.returncode} {proc.stdout} {proc.stderr}"
            )
        errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
        return {
            "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "requests": int(raw["requests"]),
            "mean_ms": round(raw["mean_us"] / 1000, 3),
            "p50_ms": round(raw["p50_us"] / 1000, 3),
            "p90_ms": round(raw["p90_us"] / 1000, 3),
            "p99_ms": round(raw["p99_us"] / 1000, 3),
            "max_ms": round(raw["max_us"] / 1000, 3),
            "errors": int(errors),
            "other_processes_busy_cores": None if other is None else round(max(other, 0.0), 2),
        }

    def pair(
        self,
        label: str,
        ours: Proc,
        bare: Proc,
        path: str,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
        conns: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Ours and bare, alternating over `rounds` rounds (each after a warm-up), aggregated."""
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
        per = max(1, round(self.args.duration / self.args.rounds))
        for _ in range(self.args.rounds):
            for name, p in (("ours", ours), ("bare", bare)):
                if self.args.warmup > 0:
                    self.run(p.port, path, method, headers, body, conns, self.args.warmup)
                runs[name].append(self.run(p.port, path, method, headers, body, conns, per, p.p.pid))
        out = []
        for name in ("ours", "bare"):
            rs = runs[name]

            def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
                return round(statistics.median(r[k] for r in rs), 3)

            total_s = sum(r["requests"] / r["rps"] for r in rs if r["rps"])
            others = [
                r["other_processes_busy_cores"] for r in rs if r["other_processes_busy_cores"] is not None
            ]
            res = {
                "rps": round(sum(r["requests"] for r in rs) / total_s, 1) if total_s else 0.0,
                "requests": sum(r["requests"] for r in rs),
                "mean_ms": round(
                    sum(r["mean_ms"] * r["requests"] for r in rs) / max(1, sum(r["requests"] for r in rs)), 3
                ),
                "p50_ms": med("p50_ms"),
                "p90_ms": med("p90_ms"),
                "p99_ms": med("p99_ms"),
                "p99_worst_round_ms": max(r["p99_ms"] for r in rs),
                "max_ms": max(r["max_ms"] for r in rs),
                "rounds_rps": [r["rps"] for r in rs],
                "errors": sum(r["errors"] for r in rs),
                "other_processes_busy_cores": round(max(others), 2) if others else None,
            }
            log(f"{label} [{name}]: {res}")
            out.append(res)
        return out[0], out[1]


async def _loadgen_main(spec: dict[str, Any]) -> None:
    body = b""
    if spec["body_path"]:
        with open(spec["body_path"], "rb") as f:
            body = f.read()
    head = [f"{spec['method']} {spec['path']} HTTP/1.1", f"Host: 127.0.0.1:{spec['port']}"]
    head += [f"{k}: {v}" for k, v in spec["headers"].items()]
    if body or spec["method"] != "GET":
        head.append(f"Content-Length: {len(body)}")
    req = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    lat: list[float] = []
    errs = {"errors_connect": 0, "errors_read": 0, "errors_write": 0, "errors_status": 0, "errors_timeout": 0}
    t_start = time.perf_counter()
    deadline = t_start + spec["duration"]

    async def conn() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", spec["port"])
        except OSError:
            errs["errors_connect"] += 1
            return
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                writer.write(req)
                hdr = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                status = int(hdr[9:12])
                clen = None
                for line in hdr.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        clen = int(line[15:])
                if clen is None:
                    raise RuntimeError("responses without Content-Length are not supported")
                if clen:
                    await reader.readexactly(clen)
                lat.append(time.perf_counter() - t0)
                if not 200 <= status < 400:
                    errs["errors_status"] += 1
        except TimeoutError:
            errs["errors_timeout"] += 1
        except (OSError, asyncio.IncompleteReadError):
            errs["errors_read"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(conn() for _ in range(spec["conns"])))
    elapsed = time.perf_counter() - t_start
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q / 100 * len(lat)))] * 1e6 if lat else 0.0

    out = {
        "requests": len(lat),
        "duration_us": elapsed * 1e6,
        **errs,
        "mean_us": statistics.fmean(lat) * 1e6 if lat else 0.0,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "max_us": lat[-1] * 1e6 if lat else 0.0,
    }
    print("BENCHJSON " + json.dumps(out), flush=True)


# ============================================================================================
# orchestration
# ============================================================================================


class Proc:
    """A server subprocess that prints `READY {json}` once it listens."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: str, pin: bool) -> None:
        self.name = name
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.logf = open(self.logpath, "wb")
        prefix = ["taskset", "-c", "1"] if pin else []
        self.p = subprocess.Popen(
            [*prefix, sys.executable, os.path.abspath(__file__), *argv],
            stdout=subprocess.PIPE,
            stderr=self.logf,
            env=env,
            cwd=REPO,
        )
        self.info: dict[str, Any] = {}

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        assert self.p.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.p.poll() is not None:
                raise RuntimeError(f"{self.name} did not start (see {self.logpath}): {self._tail()}")
            if sel.select(min(left, 0.5)):
                chunk = os.read(self.p.stdout.fileno(), 1 << 20)
                if not chunk:
                    continue
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"{self.name}: unexpected output {line[:200]!r}")
        self.info = json.loads(line[len("READY ") :])
        return self.info

    def _tail(self) -> str:
        self.logf.flush()
        with open(self.logpath, "rb") as f:
            return f.read()[-2000:].decode(errors="replace")

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()


class Client:
    """A keep-alive http.client connection (for checks, and the POST->pending-starter latency)."""

    def __init__(self, port: int) -> None:
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def req(self, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.c.request(method, path, body=data, headers=headers)
        r = self.c.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None

    def close(self) -> None:
        self.c.close()


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def _post_to_pending(port: int, bare_port: int, user: str, tms: str, n: int, poll_s: float) -> dict[str, Any]:
    c = Client(port)
    path = f"/v1/tms/pending-starter/taskforces?schedd={LAT_SCHEDD}"
    status, got = c.req("GET", path, tms)
    assert status == 200 and got == {}, f"schedd {LAT_SCHEDD} should have nothing pending: {status} {got}"
    lats, posts, polls = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        status, created = c.req("POST", "/v1/workflows", user, workflow_body([LAT_LOC], tag=f"lat{i}"))
        t1 = time.perf_counter()
        assert status == 200, (status, created)
        wid = created["workflow"]["workflow_id"]
        k = 0
        while True:
            k += 1
            status, got = c.req("GET", path, tms)
            t2 = time.perf_counter()
            assert status == 200, (status, got)
            tf = got.get("taskforce") if got else None
            if tf and tf["workflow_id"] == wid:
                break
            if t2 - t1 > 10:
                raise RuntimeError(f"workflow {wid} not offered at pending-starter within 10 s")
            time.sleep(max(0.0, poll_s - (time.perf_counter() - t2)))
        lats.append(t2 - t1)
        posts.append(t1 - t0)
        polls.append(k)
        status, _ = c.req(
            "POST",
            f"/v1/tms/condor-submit/taskforces/{tf['taskforce_uuid']}",
            tms,
            {
                "cluster_id": 900_000 + i,
                "n_workers": 1,
                "submit_dict": {"queue": 1},
                "job_event_log_fpath": "/scratch/ewms/lat.log",
            },
        )
        assert status == 200, status
        time.sleep(0.01)
    c.close()
    b = Client(bare_port)
    rtts = []
    for _ in range(max(50, n)):
        t0 = time.perf_counter()
        b.req("GET", path, tms)
        rtts.append(time.perf_counter() - t0)
    b.close()
    ms = lambda x: round(x * 1000, 2)  # noqa: E731
    return {
        "n": n,
        "poll_interval_ms": poll_s * 1000,
        "p50_ms": ms(_pct(lats, 50)),
        "p90_ms": ms(_pct(lats, 90)),
        "max_ms": ms(max(lats)),
        "polls_per_sample_p50": _pct([float(p) for p in polls], 50),
        "post_latency_p50_ms": ms(_pct(posts, 50)),
        "bare": {
            "what": "one GET round trip to the bare handler with the same client (resolution floor)",
            "rtt_p50_ms": ms(_pct(rtts, 50)),
            "rtt_p90_ms": ms(_pct(rtts, 90)),
        },
        "generator": "python http.client keep-alive (in the orchestrating process)",
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    from ewms_server.auth import mint_token

    if args.pin and not (shutil.which("taskset") and (os.cpu_count() or 1) >= 2):
        args.pin = False
    if args.pin:
        os.sched_setaffinity(0, {0})
    secret = secrets.token_urlsafe(48)
    user = mint_token(secret, sub="alice", role="user", expires_s=86400)
    every_schedd = [v if isinstance(v, str) else v["schedd"] for v in LOCATIONS.values()]
    tms = mint_token(secret, sub="bench-tms", role="system-tms", expires_s=86400, schedds=every_schedd)
    base_env = {
        **os.environ,
        "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "EWMS_LOG_LEVEL": args.log_level,
    }
    for k in [k for k in base_env if k.startswith("EWMS_")]:
        if k != "EWMS_LOG_LEVEL":
            del base_env[k]
    ours_env = {
        **base_env,
        "EWMS_AUTH_SECRET": secret,
        "EWMS_REST_HOST": "127.0.0.1",
        "EWMS_REST_PORT": "0",
        "EWMS_CLUSTER_LOCATIONS": json.dumps(LOCATIONS),
        "EWMS_SQLITE_SYNCHRONOUS": args.synchronous,
        # throughput, not quotas: one user creates hundreds of workflows a second here
        "EWMS_USER_MAX_ACTIVE_WORKFLOWS": "0",
        "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "0",
    }
    procs: list[Proc] = []
    out: dict[str, Any] = {"benchmark": "bench_server"}
    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp:
        load = Load(args, tmp)
        out["generator"] = load.describe()
        try:
            import tornado

            out["config"] = {
                "mode": "quick" if args.quick else "full",
                "connections": args.connections,
                "threads": args.threads if load.kind == "wrk" else 1,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "aggregation": "rps = all requests / all measured time; p50/p90/p99 = median over rounds "
                "(wrk reports percentiles per run); ours and bare alternate round by round",
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                "cpu_pinning": "servers on CPU 1, load generator on CPU 0" if args.pin else "none",
                "database": f"SQLite, the default store (fresh EWMS_DATA_DIR), synchronous={args.synchronous}",
                "broker": "none (null adapter)",
                "log_level": args.log_level
                + " (logs.configure like `python -m ewms_server`; tornado access log on at INFO)",
                "loop_interval_s": 15,
                "tornado": tornado.version,
                "python": platform.python_version(),
            }
            bare = Proc("bare", ["--_serve", "bare"], base_env, tmp, args.pin)
            procs.append(bare)
            empty = Proc(
                "ours-empty",
                ["--_serve", "ours"],
                {**ours_env, "EWMS_DATA_DIR": f"{tmp}/empty"},
                tmp,
                args.pin,
            )
            procs.append(empty)
            bare.wait_ready(30)
            empty.wait_ready(30)
            ps_path = f"/v1/tms/pending-starter/taskforces?schedd={TARGET_SCHEDD}"
            auth_tms = {"Authorization": f"Bearer {tms}"}
            c = Client(empty.port)
            assert c.req("GET", ps_path, tms) == (200, {}), "empty server should offer nothing"
            c.close()
            conns = args.connections

            # ---- 1. pending-starter ----
            r_empty, r_bare_get0 = load.pair(
                "pending-starter, empty db", empty, bare, ps_path, "GET", auth_tms, None, conns
            )
            empty.stop()

            log(f"seeding {args.taskforces} taskforces in the server process...")
            seeded = Proc(
                "ours-seeded",
                [
                    "--_serve",
                    "ours",
                    "--seed",
                    str(args.taskforces),
                    "--pending-at-target",
                    str(args.pending_at_target),
                ],
                {**ours_env, "EWMS_STARTER_LEASE_S": "0", "EWMS_DATA_DIR": f"{tmp}/seeded"},
                tmp,
                args.pin,
            )
            procs.append(seeded)
            info = seeded.wait_ready(600)
            log(f"seeded in {info['seed_s']} s: {info['mix_by_schedd_phase']}")
            c = Client(seeded.port)
            status, got = c.req("GET", ps_path, tms)
            assert status == 200 and got["taskforce"]["schedd"] == TARGET_SCHEDD, (status, got)
            assert got["taskforce"]["phase"] == "pending-starter" and len(got["mqprofiles"]) == 2
            c.close()
            r_seeded, r_bare_get = load.pair(
                "pending-starter, seeded db", seeded, bare, ps_path, "GET", auth_tms, None, conns
            )
            # latency as one TMS sees it: a single poller (with N connections the mean latency is
            # N / rate by Little's law, so p99 < 5 ms at 8 connections would need > 1,600 req/s)
            r_seeded_1, r_bare_get_1 = load.pair(
                "pending-starter, seeded db, 1 connection", seeded, bare, ps_path, "GET", auth_tms, None, 1
            )
            n_pending_target = info["mix_by_schedd_phase"][TARGET_SCHEDD].get("pending-starter", 0)
            out["seed"] = {
                "method": "inside the server subprocess before READY: create_workflow per workflow (1 task, 2 "
                "locations -> 2 taskforces), then checked storage update_where/transition calls to give "
                "each workflow a phase history",
                "seconds": info["seed_s"],
                "workflows": info["workflows"],
                "taskforces": info["taskforces"],
                "workflow_classes": info["workflow_classes"],
                "target_schedd": TARGET_SCHEDD,
                "pending_starter_at_target": n_pending_target,
                "mix_by_schedd_phase": info["mix_by_schedd_phase"],
            }
            rs = r_seeded["rps"] / r_bare_get["rps"]
            out["pending_starter"] = {
                "path": ps_path,
                "steady_state": "EWMS_STARTER_LEASE_S=0 on the seeded server: each GET still does the "
                f"lease update, and the same top taskforce of the {n_pending_target} pending at "
                f"{TARGET_SCHEDD} keeps being offered (lease 120 s default on the empty server)",
                "seeded": r_seeded,
                "bare_tornado": r_bare_get,
                "seeded_1_connection": r_seeded_1,
                "bare_tornado_1_connection": r_bare_get_1,
                "empty_db": r_empty,
                "bare_tornado_beside_empty": r_bare_get0,
                "ratio_seeded_vs_bare": round(rs, 3),
                "ratio_empty_vs_bare": round(r_empty["rps"] / r_bare_get0["rps"], 3),
                "original_empty_db_rps": ORIGINAL["pending_starter_empty_db_rps"],
                "empty_db_vs_original": round(r_empty["rps"] / ORIGINAL["pending_starter_empty_db_rps"], 2),
            }

            # ---- 3. statuses (before 2., which grows the store) ----
            uuids = info["target_condor_submit_uuids"]
            assert len(uuids) == 100, len(uuids)
            sbody = statuses_body(uuids)
            c = Client(seeded.port)
            status, got = c.req("POST", "/v1/tms/statuses/taskforces", tms, sbody)
            assert status == 200 and all(r["status"] == "updated" for r in got["results"]), (status, got)
            c.close()
            jhead = {**auth_tms, "Content-Type": "application/json"}
            sraw = json.dumps(sbody).encode()
            r_st, r_st_bare = load.pair(
                "statuses x100", seeded, bare, "/v1/tms/statuses/taskforces", "POST", jhead, sraw, 1
            )
            out["statuses_100"] = {
                "connections": 1,
                "body_bytes": len(sraw),
                "taskforces_per_call": 100,
                "ours": {
                    **r_st,
                    "ms_per_call": r_st["mean_ms"],
                    "ms_per_taskforce": round(r_st["mean_ms"] / 100, 4),
                },
                "bare_tornado": {**r_st_bare, "ms_per_call": r_st_bare["mean_ms"]},
                "ratio_rps_vs_bare": round(r_st["rps"] / r_st_bare["rps"], 3),
            }

            # ---- 4. POST -> pending-starter ----
            lat = _post_to_pending(seeded.port, bare.port, user, tms, args.latency_samples, 0.002)
            log(f"POST->pending-starter: {lat}")
            out["post_to_pending_starter"] = lat

            # ---- 2. POST /v1/workflows ----
            wbody = json.dumps(workflow_body([TARGET_LOC])).encode()
            auth_user = {"Authorization": f"Bearer {user}", "Content-Type": "application/json"}
            c = Client(seeded.port)
            status, got = c.req("POST", "/v1/workflows", user, json.loads(wbody))
            assert status == 200 and len(got["taskforces"]) == 1 and len(got["task_directives"]) == 1, status
            c.close()
            r_post, r_post_bare = load.pair(
                "POST /v1/workflows", seeded, bare, "/v1/workflows", "POST", auth_user, wbody, conns
            )
            out["post_workflows"] = {
                "body": "1 task, 1 location, 2 queues",
                "body_bytes": len(wbody),
                "on": f"the seeded server ({info['taskforces']} taskforces at start; the store grows during the run)",
                "ours": r_post,
                "bare_tornado": r_post_bare,
                "ratio_vs_bare": round(r_post["rps"] / r_post_bare["rps"], 3),
                "original_rps": ORIGINAL["post_workflows_rps"],
                "vs_original": round(r_post["rps"] / ORIGINAL["post_workflows_rps"], 2),
            }
        finally:
            for p in procs:
                try:
                    p.stop()
                except Exception as e:  # keep stopping the others
                    log(f"stopping {p.name}: {e}")
    t = TARGETS
    met = {
        "pending_starter_rate_ge_50pct_of_bare": rs >= t["pending_starter_min_ratio_vs_bare"],
        "pending_starter_p99_lt_2ms_1_connection": r_seeded_1["p99_ms"] < t["pending_starter_max_p99_ms"],
        "post_workflows_ge_600_rps": r_post["rps"] >= t["post_workflows_min_rps"],
        "statuses_le_0_1ms_per_taskforce": out["statuses_100"]["ours"]["ms_per_taskforce"]
        <= t["statuses_max_ms_per_taskforce"],
        "post_to_pending_starter_p50_lt_50ms": lat["p50_ms"] < t["post_to_pending_starter_max_p50_ms"],
    }
    errors = sum(
        r["errors"]
        for r in (
            r_empty,
            r_bare_get0,
            r_bare_get,
            r_seeded,
            r_seeded_1,
            r_bare_get_1,
            r_st,
            r_st_bare,
            r_post,
            r_post_bare,
        )
    )
    met["all"] = all(met.values()) and errors == 0
    out["load_errors"] = errors
    out["ratios"] = {
        "pending_starter_seeded_vs_bare": out["pending_starter"]["ratio_seeded_vs_bare"],
        "pending_starter_empty_vs_bare": out["pending_starter"]["ratio_empty_vs_bare"],
        "post_workflows_vs_bare": out["post_workflows"]["ratio_vs_bare"],
        "statuses_vs_bare": out["statuses_100"]["ratio_rps_vs_bare"],
        "post_workflows_vs_original": out["post_workflows"]["vs_original"],
        "pending_starter_empty_vs_original": out["pending_starter"]["empty_db_vs_original"],
    }
    out["in_memory_engine"] = {
        **IN_MEMORY_ENGINE,
        "pending_starter_10k_ratio_vs_bare": round(
            IN_MEMORY_ENGINE["pending_starter_10k_rps"] / IN_MEMORY_ENGINE["bare_tornado_rps_beside_it"], 3
        ),
        "note": "figures of the removed in-memory engine on this benchmark (another run, another machine load)",
    }
    out["targets"] = t
    out["targets_met"] = met
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="2 s per measurement, 1 s warm-up, 15 latency samples"
    )
    ap.add_argument(
        "--duration", type=float, default=None, help="seconds per measurement (default 10; quick 2)"
    )
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds before each (default 1)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternate ours/bare this many times per measurement, splitting --duration (default 2; quick 1)",
    )
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--taskforces", type=int, default=10_000)
    ap.add_argument(
        "--pending-at-target",
        type=int,
        default=100,
        help="pending-starter taskforces at the target schedd (as many again at the others)",
    )
    ap.add_argument("--latency-samples", type=int, default=None, help="default 50; quick 15")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument(
        "--synchronous", choices=["NORMAL", "FULL"], default="NORMAL", help="EWMS_SQLITE_SYNCHRONOUS"
    )
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    ap.add_argument("--_serve", choices=["ours", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--_loadgen", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._serve == "ours":
        asyncio.run(_serve_ours(args))
        return 0
    if args._serve == "bare":
        asyncio.run(_serve_bare(args))
        return 0
    if args._loadgen:
        asyncio.run(_loadgen_main(json.loads(args._loadgen)))
        return 0
    args.duration = args.duration or (2.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else 1.0
    args.latency_samples = args.latency_samples or (15 if args.quick else 50)
    args.rounds = max(1, args.rounds or (1 if args.quick else 2))
    t0 = time.monotonic()
    out = orchestrate(args)
    out["wall_s"] = round(time.monotonic() - t0, 1)
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
