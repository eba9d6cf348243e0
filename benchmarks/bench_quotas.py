"""What the per-user quotas cost a create, for a user with a long history, on the default store.

Prints ONE JSON line. Run from the repo root: `python benchmarks/bench_quotas.py [--history N]
[--creates N]`. The server runs in this process (SQLite in a temporary EWMS_DATA_DIR). The store
is seeded through the storage layer with one user's N ended workflows (each with an add-workers
taskforce, all made an hour ago) and 50 other users' 20 active workflows each. Then:

- `create_ms`: POST /v1/workflows by that user with every quota checked (limits high enough
  never to refuse), beside the same creates with the quotas off (`baseline_create_ms`);
- `check_ms`: the quota checks alone (QuotaGate, no HTTP, no insert);
- `owner_scan_ms`: the naive count of the user's active workflows by owner alone, which walks
  the user's whole history: what the quota check avoids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tornado.httpclient import AsyncHTTPClient  # noqa: E402

from ewms_server import documents  # noqa: E402
from ewms_server.caller import Caller  # noqa: E402
from ewms_server.phases import Phase  # noqa: E402
from ewms_server.quotas import QuotaGate, Quotas  # noqa: E402
from ewms_server.testing import running_server  # noqa: E402
from tests.conftest import LOCATIONS, workflow_body  # noqa: E402

HIGH = {
    "EWMS_USER_MAX_ACTIVE_WORKFLOWS": "1000000",
    "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "1000000",
    "EWMS_MAX_TASKFORCES_PER_WORKFLOW": "1000000",
    "EWMS_USER_MAX_ADD_WORKERS_PER_MIN": "1000000",
}
OFF = {k: "0" for k in HIGH}


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs) or [0.0]
    return {
        "p50": round(1000 * statistics.median(xs), 3),
        "p99": round(1000 * xs[int(0.99 * (len(xs) - 1))], 3),
    }


async def _seed(store: Any, history: int) -> None:
    old = time.time() - 3600
    batch_wf, batch_tf = [], []
    for i in range(history):
        wf = documents.workflow(priority=50, owner="heavy")
        wf.update(timestamp=old, deactivated="FINISHED", deactivated_ts=old, taskforces_stopped=True)
        wf["workflow_id"] = f"WF-{int(old * 1000) + i:012x}-0000-000000"
        tf = documents.taskforce(
            task_id=f"TK-{int(old * 1000) + i:012x}-0000-000000",
            workflow_id=wf["workflow_id"],
            owner="heavy",
            priority=50,
            cluster_location="local",
            schedd="s",
            collector="",
            n_workers=1,
            pilot_config=dict(documents.PILOT_CONFIG_DEFAULTS),
            worker_config={**documents.WORKER_CONFIG_DEFAULTS, "max_worker_runtime": 60, "n_cores": 1},
            phase=Phase.CANCELLED,
            source_entity="bench",
            origin="add-workers",
        )
        tf.update(timestamp=old, taskforce_uuid=f"TF-{int(old * 1000) + i:012x}-0000-000000")
        batch_wf.append(wf)
        batch_tf.append(tf)
    for u in range(50):  # active, made an hour ago
        for j in range(20):
            wf = documents.workflow(priority=50, owner=f"user-{u}")
            wf.update(timestamp=old, workflow_id=f"WF-{int(old * 1000) - 1 - u * 20 - j:012x}-0000-000000")
            batch_wf.append(wf)
    for i in range(0, len(batch_wf), 2000):
        await store.insert("workflows", batch_wf[i : i + 2000])
    for i in range(0, len(batch_tf), 2000):
        await store.insert("taskforces", batch_tf[i : i + 2000])


async def _creates(srv: Any, n: int, warmup: int = 10) -> list[float]:
    """`n` timed creates after `warmup` untimed ones."""
    http, out = AsyncHTTPClient(), []
    body = json.dumps(workflow_body())
    headers = {"Authorization": f"Bearer {srv.token(role='user', sub='heavy')}"}
    for i in range(warmup + n):
        t0 = time.monotonic()
        r = await http.fetch(srv.url + "/v1/workflows", method="POST", body=body, headers=headers)
        if i >= warmup:
            out.append(time.monotonic() - t0)
        assert r.code == 200
    return out


async def main(history: int, creates: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ewms-bench-") as data:
        env = {"EWMS_DATA_DIR": data, "EWMS_LOOP_INTERVAL_S": "3600"}
        async with running_server(cluster_locations=LOCATIONS, env={**env, **OFF}) as srv:
            t0 = time.monotonic()
            await _seed(srv.deps.store.inner, history)
            seed_s = time.monotonic() - t0
            baseline = await _creates(srv, creates)
        async with running_server(cluster_locations=LOCATIONS, env={**env, **HIGH}) as srv:
            store, heavy = srv.deps.store, Caller("heavy", "user")
            quota = await _creates(srv, creates)
            gate = QuotaGate(Quotas(10**6, 10**6, 10**6, 10**6))
            checks, scans = [], []
            for _ in range(creates):
                t0 = time.monotonic()
                async with gate.creating_workflow(store, heavy, 2):
                    pass
                async with gate.adding_workers(store, heavy, "WF-000000000000-0000-000000"):
                    pass
                checks.append(time.monotonic() - t0)
                t0 = time.monotonic()
                await store.count("workflows", {"owner": "heavy", "deactivated": None})
                scans.append(time.monotonic() - t0)
    return {
        "bench": "quotas",
        "store": "sqlite",
        "history_workflows": history,
        "other_active_workflows": 1000,
        "creates": creates,
        "seed_s": round(seed_s, 1),
        "create_ms": _ms(quota),
        "baseline_create_ms": _ms(baseline),
        "check_ms": _ms(checks),
        "owner_scan_ms": _ms(scans),
        "note": "shared machine; in-process server",
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--history", type=int, default=50000, help="ended workflows of the measured user")
    ap.add_argument("--creates", type=int, default=200, help="creates measured per configuration")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.history, args.creates))))
