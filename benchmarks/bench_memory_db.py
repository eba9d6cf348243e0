"""Benchmark of the in-memory database against mongomock-motor; prints one JSON line.

10,000 taskforce-like documents (~2 KB each), indexed like the server indexes taskforces.
Times are microseconds per operation, the best of a few rounds (the machine may be shared).
Run: `python benchmarks/bench_memory_db.py`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ewms_server.database.base import Collection
from ewms_server.database.driver import open_database
from ewms_server.database.memory import MemoryDatabase

N_DOCS = 10_000
N_SCHEDDS = 10  # with 10 phases: ~100 documents per (schedd, phase)
PHASES = ["pending-starter", "pending-stopper", "condor-submit", "running", "done",
          "pending-watcher", "failed", "stopped", "held", "removed"]  # fmt: skip
SORT = [("priority", -1), ("timestamp", 1)]
STARTER_SORT = [("priority", -1), ("n_failed_submits", 1), ("timestamp", 1)]  # the TMS route's
LEASE_S = 50.0  # one claim per op, the clock advancing 1 s per op: ~half the candidates leased


def taskforce(i: int, rng: random.Random) -> dict[str, Any]:
    """A document shaped like a taskforce: nested dicts and a 5-entry phase change log."""
    return {
        "taskforce_uuid": str(uuid.UUID(int=rng.getrandbits(128))),
        "workflow_id": f"workflow-{i // 4:06d}",
        "schedd": f"schedd-{i % N_SCHEDDS}.icecube.wisc.edu",
        "phase": PHASES[(i // N_SCHEDDS) % len(PHASES)],
        "priority": rng.randint(0, 9),
        "timestamp": 1_700_000_000 + rng.random() * 1e6,
        "n_workers": rng.randint(1, 1000),
        "cluster_id": None,
        "n_failed_submits": i % 3,
        "lease_until": 0.0,
        "pilot_config": {
            "image": "/cvmfs/icecube.opensciencegrid.org/containers/ewms/task:latest",
            "tag": "latest",
            "environment": {"EWMS_PILOT_PREFETCH": "1", "EWMS_PILOT_TIMEOUT": "3600"},
            "input_files": ["/data/in/a.json", "/data/in/b.json"],
        },
        "worker_config": {
            "do_transfer_worker_stdouterr": True,
            "max_worker_runtime": 86_400,
            "n_cores": 1,
            "priority": 0,
            "worker_disk": "1G",
            "worker_memory": "4G",
            "condor_requirements": "HAS_CVMFS_icecube_opensciencegrid_org && OSG_OS_VERSION =?= 9",
        },
        "compound_statuses": {"Running": {"Tasking": 3}},
        "top_task_errors": {},
        "job_event_log_fpath": f"/var/log/ewms/tms/{i:08d}.log",
        "phase_change_log": [
            {
                "target_phase": PHASES[k],
                "timestamp": 1_700_000_000 + k,
                "source_entity": "TMS",
                "context": "transition recorded by the taskforce management service " * 2,
                "was_successful": True,
            }
            for k in range(5)
        ],
    }


TARGETS_US = {
    "find_one_by_uuid": 30,
    "find_one_and_update_sorted_pending": 300,
    "find_one_and_update_leased_pending": 60,
}


async def per_op_us(op: Callable[[int], Awaitable[Any]], n: int, rounds: int) -> float:
    """Mean time of `n` calls, best of `rounds` rounds."""
    best = math.inf
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(r * n, (r + 1) * n):
            await op(i)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


async def measure(coll: Collection, n: int, rounds: int) -> dict[str, float]:
    rng = random.Random(1)
    docs = [taskforce(i, rng) for i in range(N_DOCS)]
    await coll.insert_many(docs)  # before indexing: mongomock checks uniqueness by scanning
    await coll.create_index([("taskforce_uuid", 1)], unique=True)
    await coll.create_index([("schedd", 1), ("phase", 1)])
    uuids = [d["taskforce_uuid"] for d in docs]
    pending = {"schedd": "schedd-3.icecube.wisc.edu", "phase": "pending-starter"}
    assert await coll.count_documents(pending) == N_DOCS // N_SCHEDDS // len(PHASES)

    async def fetch_by_uuid(i: int) -> Any:
        return await coll.find_one({"taskforce_uuid": uuids[i * 7919 % N_DOCS]})

    async def fetch_next(i: int) -> Any:
        return await coll.find_one(pending, sort=SORT)

    async def claim_next(i: int) -> Any:  # set the phase to itself: the candidate set stays ~100
        return await coll.find_one_and_update(
            pending, {"$set": {"phase": "pending-starter", "n_workers": i}}, sort=SORT
        )

    async def claim_leased(i: int) -> Any:  # GET /v1/tms/pending-starter/taskforces, verbatim
        now = 1_800_000_000.0 + i
        return await coll.find_one_and_update(
            {**pending, "lease_until": {"$lte": now}},
            {"$set": {"lease_until": now + LEASE_S}},
            sort=STARTER_SORT,
        )

    async def set_by_uuid(i: int) -> Any:
        return await coll.update_one(
            {"taskforce_uuid": uuids[i * 7919 % N_DOCS]}, {"$set": {"compound_statuses.x": i}}
        )

    extra = [taskforce(N_DOCS + i, rng) for i in range(n * rounds)]

    async def insert(i: int) -> Any:
        return await coll.insert_one(extra[i])

    ops = {"find_one_by_uuid": fetch_by_uuid, "find_one_sorted_pending": fetch_next,
           "find_one_and_update_sorted_pending": claim_next,
           "find_one_and_update_leased_pending": claim_leased, "update_one_set_by_uuid": set_by_uuid,
           "insert_one": insert}  # fmt: skip
    return {name: round(await per_op_us(op, n, rounds), 1) for name, op in ops.items()}


async def main() -> None:
    memory = await measure(MemoryDatabase().collection("taskforces"), 500, 5)
    mongomock = await measure(open_database("mongomock://").collection("taskforces"), 10, 2)
    met = all(memory[name] < limit for name, limit in TARGETS_US.items())
    result = {"n_docs": N_DOCS, "unit": "us/op", "memory": memory, "mongomock_motor": mongomock}
    print(json.dumps({**result, "targets_us": TARGETS_US, "targets_met": met}))


if __name__ == "__main__":
    asyncio.run(main())
