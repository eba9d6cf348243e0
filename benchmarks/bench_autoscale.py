"""Autoscaling against fixed-size taskforces, every part real, each measured in the same run.

Prints ONE JSON line on stdout (everything else goes to stderr). From the repo root:

    python benchmarks/bench_autoscale.py            # 1,000 messages of 0.3 s (~5 min)
    python benchmarks/bench_autoscale.py --quick    # 300 messages

One server in this process (`ewms_server.testing.running_server`, SQLite, the RabbitMQ adapter
on the local broker at 127.0.0.1) and one `ewms-tms` subprocess with the local backend running
real pilots, as the end-to-end tests start them. Three workflows in turn, each a task reading
`in` and writing `out`, tasks of --task-s seconds, one task at a time per pilot:

- fixed-1: one worker (n_workers 1), on --fixed-1-messages (150) only, to keep the run
  short: its drain and worker-seconds are also given scaled to --messages (one worker's rate is
  steady, so this is linear);
- fixed-max: a fixed taskforce of --max-workers workers;
- autoscaled: `autoscale: {"max_workers": --max-workers}`, one worker at start.

For each: the backlog (--messages) is pushed at once; `drain_s` runs from the start of the
push (workers already running consume during it) to the last result pulled. Tasks of 0.3 s
keep the machine's 2 cores from being the bottleneck (a task is a fresh Python process). `worker_s` integrates the workers HTCondor reports RUNNING (the
server's view, sampled every 0.2 s) from the workflow's creation until none runs (pilots end
by their idle timeout: for the fixed ones the pilot's default, 60 s (--fixed-idle-timeout-s),
as a fixed taskforce kept ready for more messages runs; EWMS_AUTOSCALE_IDLE_TIMEOUT_S for the
autoscaler's, which can afford a short one because it scales out again when messages come). `worker_s_until_drained`
counts only until the last result. For the autoscaled run, `first_added_worker_s` runs from
the end of the push to the creation of the first taskforce the autoscaler added, and
`first_added_running_s` to its first running job.

Targets: first added worker < 5 s; autoscaled drain <= 1.3 x fixed-max's; autoscaled
worker-seconds <= 60 % of fixed-max's. Bounded: every wait has a deadline, and every process
this starts is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from ewms_client import queues  # noqa: E402
from ewms_client.client import EWMSClient  # noqa: E402
from ewms_pilot.config import SETTINGS_DOCS  # noqa: E402
from ewms_server.testing import running_server  # noqa: E402
from tests.processes import stop_process  # noqa: E402
from tests.test_e2e_autoscale import SERVER_ENV, running, slow_echo_request  # noqa: E402
from tests.test_e2e_workflow import (  # noqa: E402
    BROKER_URL,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    start_tms,
    supervisor_pids,
)
from tests.tms.isolation import job_root  # noqa: E402

SCHEDD = "bench-autoscale-schedd"
TARGETS = {
    "first_added_worker_max_s": 5.0,
    "drain_max_ratio_vs_fixed_max": 1.3,
    "worker_s_max_ratio_vs_fixed_max": 0.6,
}
SAMPLE_S = 0.2
PILOT_IDLE_TIMEOUT_S = float(next(d for n, d, _ in SETTINGS_DOCS if n == "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING"))


def log(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


async def one_run(
    client: EWMSClient, body: dict[str, Any], n: int, budget_s: float, wids: list[str]
) -> dict[str, Any]:
    def call(fn: Any, *a: Any, **kw: Any) -> Any:
        return asyncio.to_thread(fn, *a, **kw)

    created = await call(client.submit, body)
    wid = created["workflow"]["workflow_id"]
    wids.append(wid)
    first_uuids = {tf["taskforce_uuid"] for tf in created["taskforces"]}
    start = time.monotonic()
    deadline = start + budget_s
    push_q = await call(client.pick_queue, wid, None, "push", 60)
    pull_q = await call(client.pick_queue, wid, None, "pull", 60)
    pushing = time.monotonic()
    await call(queues.push, push_q, (b"%d" % i for i in range(n)))
    t0 = time.monotonic()
    got: list[float] = []
    puller = threading.Thread(
        target=queues.pull,
        args=(pull_q, lambda _b: got.append(time.monotonic())),
        kwargs={"n": n, "timeout": budget_s},
        daemon=True,
    )
    puller.start()
    worker_s = worker_s_drained = 0.0
    first_added = first_added_running = None
    peak = 0
    last = time.monotonic()
    while True:
        tfs = await call(client.taskforces, wid)
        now = time.monotonic()
        r = running(tfs)
        peak = max(peak, r)
        worker_s += r * (now - last)
        if len(got) < n:
            worker_s_drained += r * (now - last)
        last = now
        added = [tf for tf in tfs if tf["taskforce_uuid"] not in first_uuids]
        if added and first_added is None:
            first_added = min(tf["timestamp"] for tf in added) - (time.time() - (now - t0))
        if first_added_running is None and running(added) > 0:
            first_added_running = now - t0
        if len(got) >= n and r == 0:
            break
        if now > deadline:
            raise TimeoutError(f"workflow {wid}: {len(got)}/{n} results, {r} running after {budget_s} s")
        await asyncio.sleep(SAMPLE_S)
    puller.join(5)
    for td in await call(client.task_directives, wid):
        for d in (td.get("autoscale") or {}).get("last_decisions", []):
            log(
                f"  decision {d['action']} current {d['current']} target {d['target']} running {d['running']} "
                f"pending {d['pending']} in_flight {d['in_flight']} rate/w {d['rate_per_worker']}: {d['reason']}"
            )
    await call(client.finish, wid)
    return {
        "messages": n,
        "push_s": round(t0 - pushing, 2),
        "drain_s": round(max(got) - pushing, 2),
        "worker_s": round(worker_s, 1),
        "worker_s_until_drained": round(worker_s_drained, 1),
        "peak_running": peak,
        "taskforces": len(await call(client.taskforces, wid)),
        **({"first_added_worker_s": round(first_added, 2)} if first_added is not None else {}),
        **(
            {"first_added_running_s": round(first_added_running, 2)}
            if first_added_running is not None
            else {}
        ),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = {  # the end-to-end test's server, without its user cap
        **SERVER_ENV,
        "EWMS_USER_MAX_WORKERS": "0",
        "EWMS_AUTOSCALE_TARGET_DRAIN_S": f"{args.target_drain_s:g}",
        "EWMS_AUTOSCALE_IDLE_TIMEOUT_S": f"{args.auto_idle_timeout_s:g}",
        "EWMS_LOG_LEVEL": "WARNING",
    }
    broker_env = {"EWMS_BROKER_URL": BROKER_URL}
    name = f"bench-autoscale-{os.getpid()}"
    jobs = Path(job_root(name)) / "jobs"
    wids: list[str] = []
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(cluster_locations={"local": SCHEDD}, broker_env=broker_env, env=env) as srv:
            client = EWMSClient(srv.url, srv.token(role="user", sub="bench"))
            tms = start_tms(srv, jobs, Path(tmp) / "tms.log", schedd=SCHEDD)
            fixed_env = {"EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": f"{args.fixed_idle_timeout_s:g}"}
            try:
                runs = (
                    ("fixed_1", slow_echo_request(args.task_s, 1, None, fixed_env)),
                    ("fixed_max", slow_echo_request(args.task_s, args.max_workers, None, fixed_env)),
                    ("autoscaled", slow_echo_request(args.task_s, 1, {"max_workers": args.max_workers})),
                )
                for key, body in runs:
                    if args.only and key != args.only:
                        continue
                    n = args.fixed_1_messages if key == "fixed_1" else args.messages
                    log(f"{key}: {n} messages of {args.task_s} s ...")
                    out[key] = await one_run(client, body, n, args.budget_s, wids)
                    log(f"{key}: {out[key]}")
            finally:
                stop_process(tms)
                kill_pids(supervisor_pids(jobs))
                uuids: set[str] = set()
                for wid in wids:
                    try:
                        uuids |= {
                            tf["taskforce_uuid"] for tf in await asyncio.to_thread(client.taskforces, wid)
                        }
                    except Exception:  # the server may be the thing that failed
                        pass
                kill_pids(job_processes(uuids))
                client._rc.close()
                for wid in wids:
                    await asyncio.to_thread(delete_broker_leftovers, wid)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="300 messages")
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--task-s", type=float, default=0.3)
    p.add_argument(
        "--fixed-1-messages",
        type=int,
        default=150,
        help="messages of the single-worker run (its drain and worker-seconds are scaled to --messages)",
    )
    p.add_argument("--max-workers", type=int, default=8)
    p.add_argument("--target-drain-s", type=float, default=10)
    p.add_argument(
        "--fixed-idle-timeout-s",
        type=float,
        default=PILOT_IDLE_TIMEOUT_S,
        help="idle timeout of the fixed taskforces' pilots (default: the pilot's own default)",
    )
    p.add_argument("--auto-idle-timeout-s", type=float, default=3)
    p.add_argument("--budget-s", type=float, default=400, help="deadline of each run")
    p.add_argument("--only", choices=["fixed_1", "fixed_max", "autoscaled"], help="one run (no JSON line)")
    args = p.parse_args()
    if args.quick:
        args.messages, args.fixed_1_messages = 300, 60
    load0 = os.getloadavg()[0]
    t = time.monotonic()
    runs = asyncio.run(main_async(args))
    if args.only:
        return
    fixed_max, auto, one = runs["fixed_max"], runs["autoscaled"], runs["fixed_1"]
    scale = args.messages / one["messages"]
    one["drain_s_scaled_to_messages"] = round(one["drain_s"] * scale, 1)
    one["worker_s_scaled_to_messages"] = round(
        one["worker_s_until_drained"] * scale + one["worker_s"] - one["worker_s_until_drained"], 1
    )
    result = {
        "bench": "autoscale",
        "messages": args.messages,
        "task_s": args.task_s,
        "max_workers": args.max_workers,
        "target_drain_s": args.target_drain_s,
        "fixed_idle_timeout_s": args.fixed_idle_timeout_s,
        "autoscale_idle_timeout_s": args.auto_idle_timeout_s,
        **runs,
        "first_added_worker_s": auto.get("first_added_worker_s"),
        "drain_ratio_vs_fixed_max": round(auto["drain_s"] / fixed_max["drain_s"], 3),
        "worker_s_ratio_vs_fixed_max": round(auto["worker_s"] / fixed_max["worker_s"], 3),
        "worker_s_until_drained_ratio_vs_fixed_max": round(
            auto["worker_s_until_drained"] / fixed_max["worker_s_until_drained"], 3
        ),
        "targets": TARGETS,
        "loadavg_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.monotonic() - t, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
