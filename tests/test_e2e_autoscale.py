"""Autoscaling end to end, every part real: the server with the RabbitMQ adapter, ``ewms-tms``
with the local backend, real pilots running a 0.3 s task.

200 messages; the task starts with one worker, may grow to 8, and its user may hold 5; the
delivery limit is 10. Every result comes out exactly once; the running workers peak between 3
and 5; after the queue empties they return to 0 while the workflow stays active; 30 new
messages then scale the task out from zero and all 30 come out.

`run_autoscale_e2e` takes extra TMS settings, so the same run can be made on simulated
machines (EWMS_TMS_LOCAL_MACHINES) by a test that adds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.testing import running_server
from tests.conftest import WORKER_CONFIG
from tests.processes import stop_process
from tests.test_e2e_workflow import (
    BROKER_URL,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    poll,
    start_tms,
    supervisor_pids,
)
from tests.tms.isolation import ISOLATED, JOB_PYTHON, job_root, readable

SCHEDD = "e2e-autoscale-schedd"
TASK_S = 0.3
FIRST, SECOND = 200, 30
BUDGET_S = 240
SERVER_ENV = {
    "EWMS_LOOP_INTERVAL_S": "0.3",
    "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
    "EWMS_PROGRESS_CACHE_S": "0.5",
    "EWMS_PROGRESS_SAMPLE_S": "1",
    "EWMS_PROGRESS_RATE_WINDOW_S": "5",
    "EWMS_AUTOSCALE_INTERVAL_S": "0.5",
    "EWMS_AUTOSCALE_TARGET_DRAIN_S": "5",
    "EWMS_AUTOSCALE_HOLD_DOWN_S": "5",
    "EWMS_AUTOSCALE_IDLE_TIMEOUT_S": "4",
    "EWMS_USER_MAX_WORKERS": "5",
}


def slow_echo_request(
    task_s: float, n_workers: int, autoscale: dict[str, int] | None, pilot_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One task reading `in` and writing `out`, each message taking `task_s` (also used by
    benchmarks/bench_autoscale.py)."""
    task: dict[str, Any] = {
        "cluster_locations": ["local"],
        "task_image": JOB_PYTHON if ISOLATED else sys.executable,
        "task_args": f"-S {readable('tests/e2e_tasks/slow_echo.py')} {task_s}",
        "input_queue_aliases": ["in"],
        "output_queue_aliases": ["out"],
        "pilot_config": {
            "image_source": "docker",
            "environment": {
                "EWMS_PILOT_CHIRP_INTERVAL": "0.5",
                "EWMS_PILOT_STOP_GRACE": "2",
                **(pilot_env or {}),
            },
        },
        "worker_config": {**WORKER_CONFIG, "do_transfer_worker_stdouterr": False, "worker_memory": "2G"},
        "n_workers": n_workers,
    }
    if autoscale is not None:
        task["autoscale"] = autoscale
    return {"public_queue_aliases": ["in", "out"], "tasks": [task]}


def running(taskforces: list[dict[str, Any]]) -> int:
    return sum(sum((tf["compound_statuses"].get("RUNNING") or {}).values()) for tf in taskforces)


async def run_autoscale_e2e(tmp_path: Path, extra_tms_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The run; returns what a caller may check further (the workflow id, the taskforces)."""
    jobs = Path(job_root(tmp_path.name)) / "jobs"
    tms = None
    wf_id = ""
    alice: EWMSClient | None = None
    broker_env = {"EWMS_BROKER_URL": BROKER_URL, "EWMS_BROKER_TASK_DELIVERY_LIMIT": "10"}
    async with running_server(
        cluster_locations={"local": SCHEDD}, broker_env=broker_env, env=SERVER_ENV
    ) as srv:
        alice = EWMSClient(srv.url, srv.token(role="user", sub="alice"))

        async def call(fn: Any, *args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kw)  # the server runs on this loop

        peak = 0
        watching = True

        async def watch() -> None:
            nonlocal peak
            while watching:
                peak = max(peak, running(await call(alice.taskforces, wf_id)))
                await asyncio.sleep(0.25)

        watcher = None
        try:
            async with asyncio.timeout(BUDGET_S):
                created = await call(alice.submit, slow_echo_request(TASK_S, 1, {"max_workers": 8}))
                wf_id = created["workflow"]["workflow_id"]
                task_id = created["task_directives"][0]["task_id"]
                tms = start_tms(srv, jobs, tmp_path / "tms.log", schedd=SCHEDD, extra_env=extra_tms_env)
                watcher = asyncio.create_task(watch())
                push_q = await call(alice.pick_queue, wf_id, None, "push", 30)
                pull_q = await call(alice.pick_queue, wf_id, None, "pull", 30)
                first = [f"a{i}" for i in range(FIRST)]
                assert await call(queues.push, push_q, (m.encode() for m in first)) == FIRST
                results: list[bytes] = []
                assert await call(queues.pull, pull_q, results.append, n=FIRST, timeout=120) == FIRST
                assert Counter(r.decode() for r in results) == Counter(first)  # each exactly once
                assert 3 <= peak <= 5, f"peak running workers {peak}"

                # the queue is empty and the workflow active: the workers end by themselves
                async def none_running() -> bool:
                    tfs = await call(alice.taskforces, wf_id)
                    return running(tfs) == 0 and all(tf["phase"] != "pending-starter" for tf in tfs)

                await poll(none_running, "running workers to return to 0", 60)
                wf = await call(alice.request, "GET", f"/v1/workflows/{wf_id}")
                assert wf["deactivated"] is None

                # 30 more: scaled out from zero, and every one comes out once
                second = [f"b{i}" for i in range(SECOND)]
                assert await call(queues.push, push_q, (m.encode() for m in second)) == SECOND
                more: list[bytes] = []
                assert await call(queues.pull, pull_q, more.append, n=SECOND, timeout=90) == SECOND
                assert Counter(r.decode() for r in more) == Counter(second)
                leftover: list[bytes] = []
                await call(queues.pull, pull_q, leftover.append, n=1, timeout=2)
                assert leftover == []  # no duplicate of any of the 230

                td = await call(alice.request, "GET", f"/v1/task-directives/{task_id}")
                decisions = td["autoscale"]["last_decisions"]
                outs = [d for d in decisions if d["action"] == "scale-out"]
                assert outs and all(d["target"] <= 5 for d in outs)
                assert any(
                    d["cap_reason"] and "EWMS_USER_MAX_WORKERS=5" in d["cap_reason"] for d in decisions
                )
                assert any(d["current"] == 0 and d["action"] == "scale-out" for d in decisions)  # from zero
                tfs = await call(alice.taskforces, wf_id)
                await call(alice.finish, wf_id)
                return {"workflow_id": wf_id, "taskforces": tfs, "peak": peak}
        finally:
            watching = False
            if watcher is not None:
                with contextlib.suppress(BaseException):
                    await watcher
            if tms is not None:
                stop_process(tms)
            kill_pids(supervisor_pids(jobs))
            uuids: set[str] = set()
            if wf_id and alice is not None:
                with contextlib.suppress(Exception):
                    uuids = {tf["taskforce_uuid"] for tf in await asyncio.to_thread(alice.taskforces, wf_id)}
            kill_pids(job_processes(uuids))
            if alice is not None:
                alice._rc.close()
            if wf_id:
                await asyncio.to_thread(delete_broker_leftovers, wf_id)
    raise AssertionError("unreachable")


async def test_autoscaling_end_to_end(tmp_path: Path) -> None:
    got = await run_autoscale_e2e(tmp_path)
    assert len(got["taskforces"]) >= 3  # the first, and clusters the autoscaler added
