"""How long the event loop is held while the default store works: /v1/health latency and
event-loop lag, idle and during 1,000-clause queries over 25,000 workflows' taskforces.

Prints ONE JSON line. Run from the repo root: `python benchmarks/bench_query_cost.py
[--workflows N]`. The server runs in this process (SQLite in a temporary EWMS_DATA_DIR); the
store is seeded through the storage layer. Event-loop lag: a probe sleeps 1 ms in a loop and
records how late it wakes (what any request would wait for the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tornado.httpclient import AsyncHTTPClient  # noqa: E402

from ewms_server.testing import running_server  # noqa: E402
from tests.conftest import LOCATIONS  # noqa: E402
from tests.server.test_query_cost import seed  # noqa: E402


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs) or [0.0]
    return {
        "n": len(xs),
        "p50_ms": round(1000 * statistics.median(xs), 2),
        "p99_ms": round(1000 * xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2),
        "max_ms": round(1000 * xs[-1], 2),
    }


async def _measure(srv: Any, query: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    http = AsyncHTTPClient()
    health: list[float] = []
    lag: list[float] = []
    done = asyncio.Event()

    async def poll() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            await http.fetch(srv.url + "/v1/health", request_timeout=60)
            health.append(time.monotonic() - t0)
            await asyncio.sleep(0.01)

    async def probe() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            await asyncio.sleep(0.001)
            lag.append(max(0.0, time.monotonic() - t0 - 0.001))

    tasks = [asyncio.create_task(poll()), asyncio.create_task(probe())]
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    if query is None:
        await asyncio.sleep(seconds)
    else:
        r = await http.fetch(
            srv.url + "/v1/query/taskforces",
            method="POST",
            body=json.dumps({"query": query, "projection": ["taskforce_uuid"]}),
            headers={"Authorization": f"Bearer {srv.token(role='admin', sub='root')}"},
            raise_error=False,
            request_timeout=120,
        )
        out["query_status"] = r.code
        out["query_s"] = round(time.monotonic() - t0, 3)
    done.set()
    await asyncio.gather(*tasks)
    out["health"] = _ms(health)
    out["event_loop_lag"] = _ms(lag)
    return out


async def main(n: int, budget: float) -> dict[str, Any]:
    import tests.server.test_query_cost as tq

    tq.N_WORKFLOWS = n
    env = {"EWMS_QUERY_TIME_BUDGET_S": str(budget), "EWMS_LOOP_INTERVAL_S": "30", "EWMS_LOG_LEVEL": "WARNING"}
    async with running_server(cluster_locations=LOCATIONS, env=env) as srv:
        t0 = time.monotonic()
        wids = await seed(srv)
        seed_s = time.monotonic() - t0
        return {
            "benchmark": "bench_query_cost",
            "store": "SQLite (default), temporary EWMS_DATA_DIR",
            "workflows": n,
            "seed_s": round(seed_s, 1),
            "time_budget_s": budget,
            "idle": await _measure(srv, None, 2.0),
            "or_1000_unindexed": await _measure(
                srv, {"$or": [{"worker_config.n_cores": 1000 + i} for i in range(1000)]}, 0
            ),
            "or_1000_indexed": await _measure(
                srv, {"$or": [{"workflow_id": w} for w in wids[:: max(1, n // 1000)][:1000]]}, 0
            ),
            "target": "health < 100 ms throughout; the query within its budget or a 4xx",
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workflows", type=int, default=25_000)
    ap.add_argument("--budget", type=float, default=5.0, help="EWMS_QUERY_TIME_BUDGET_S")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.workflows, args.budget))))
