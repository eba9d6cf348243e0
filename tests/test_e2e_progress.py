"""Progress, dead letters and diagnosis end to end, every part real: the server with the
RabbitMQ adapter, ``ewms-tms`` with the local backend, real pilots running
``resources/examples/tasks/square.py`` (which fails on anything but a number).

20 numbers and 3 words go in, with a delivery limit of 1: the numbers come out squared, each
word fails twice and is dead-lettered. Progress shows 20 succeeded, 6 failed attempts and 3
dead letters; retry moves the 3 back, they fail again and return to the dead letters; another
user's progress is a 404; the server's and the TMS's metrics agree.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ewms_client import queues
from ewms_client.client import ClientError, EWMSClient
from ewms_server.testing import running_server
from tests.conftest import BROKER_URL, wait_until
from tests.processes import stop_process
from tests.server.test_metrics import scrape, series
from tests.test_e2e_workflow import (
    EXAMPLES,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    start_tms,
    supervisor_pids,
)
from tests.tms.isolation import ISOLATED, JOB_PYTHON, job_root, readable

SCHEDD = "e2e-progress-schedd"
GOOD, BAD = [str(n) for n in range(20)], ["one", "two", "three"]
BUDGET_S = 150


def workflow_request() -> dict[str, Any]:
    body = json.loads((EXAMPLES / "square.json").read_text())
    task = body["tasks"][0]
    task["task_image"] = JOB_PYTHON if ISOLATED else sys.executable
    task["task_args"] = f"-S {readable('resources/examples/' + task['task_args'])}"
    task["n_workers"] = 2
    task["pilot_config"]["environment"].update(
        {
            "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "300",  # only the finish stops them
            "EWMS_PILOT_CHIRP_INTERVAL": "0.5",
            "EWMS_PILOT_STOP_GRACE": "2",
        }
    )
    task["worker_config"]["worker_memory"] = "2G"
    return body


def tms_metrics(log: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text(errors="replace"))
    assert m, "the TMS did not log its metrics address"
    with urllib.request.urlopen(m.group(1), timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_progress_dead_letters_retry_and_diagnosis_end_to_end(tmp_path: Path) -> None:
    jobs = Path(job_root(tmp_path.name)) / "jobs"
    tms_log = tmp_path / "tms.log"
    tms = None
    wf_id, uuids = "", set()
    async with running_server(
        cluster_locations={"local": SCHEDD},
        broker_env={"EWMS_BROKER_URL": BROKER_URL, "EWMS_BROKER_TASK_DELIVERY_LIMIT": "1"},
        env={
            "EWMS_LOOP_INTERVAL_S": "0.5",
            "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
            "EWMS_PROGRESS_CACHE_S": "1",
            "EWMS_PROGRESS_SAMPLE_S": "1",
            "EWMS_METRICS_CACHE_S": "0",
        },
    ) as srv:
        alice = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
        bob = EWMSClient(srv.url, srv.token(role="user", sub="bob"))

        async def call(fn: Any, *args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kw)  # the server runs on this loop

        async def progress() -> dict[str, Any]:
            return await call(alice.request, "GET", f"/v1/workflows/{wf_id}/progress")  # type: ignore[no-any-return]

        try:
            async with asyncio.timeout(BUDGET_S):
                created = await call(alice.submit, workflow_request())
                wf_id = created["workflow"]["workflow_id"]
                uuids = {tf["taskforce_uuid"] for tf in created["taskforces"]}
                task_id = created["task_directives"][0]["task_id"]
                tms = start_tms(
                    srv,
                    jobs,
                    tms_log,
                    schedd=SCHEDD,
                    extra_env={"EWMS_TMS_DIAGNOSIS_INTERVAL": "1", "EWMS_TMS_METRICS_PORT": "0"},
                )
                push_q = await call(alice.pick_queue, wf_id, None, "push", 30)
                pull_q = await call(alice.pick_queue, wf_id, None, "pull", 30)
                sent = await call(queues.push, push_q, (m.encode() for m in BAD + GOOD))
                assert sent == 23
                results: list[bytes] = []
                assert await call(queues.pull, pull_q, results.append, n=20, timeout=60) == 20
                assert sorted(int(r) for r in results) == sorted(int(n) ** 2 for n in GOOD)

                # progress: 20 succeeded, each word failed twice (limit 1) and is a dead letter
                async def settled() -> dict[str, Any] | None:
                    p = await progress()
                    t = p["totals"]
                    done = (t["succeeded"], t["failed"], t["dead_lettered"], t["pending"], t["in_flight"])
                    return p if done == (20, 6, 3, 0, 0) else None

                p = await wait_until(
                    settled, 60, 0.2, what="progress to show 20 succeeded and 3 dead letters"
                )
                assert p["tasks"][task_id]["succeeded"] == 20 and p["tasks"][task_id]["failed"] == 6
                # each pilot's last error: the square task's own message
                errors = p["tasks"][task_id]["top_errors"]
                assert errors and all("exit code 3: not a number" in e for e in errors), errors
                assert p["queues"]["numbers"]["dead_lettered"] == 3 and p["queues"]["squares"]["pending"] == 0
                assert sum(p["tasks"][task_id]["workers"].values()) == 2
                assert p["history"][-1][1:] == [20.0, 6.0] and p["eta_s"] == 0.0
                assert "broker_error" not in p

                # another user: the 404 of a workflow that does not exist
                try:
                    await call(bob.request, "GET", f"/v1/workflows/{wf_id}/progress")
                    raise AssertionError("bob read alice's progress")
                except ClientError as e:
                    assert str(e).startswith("404")

                # diagnosis from the TMS: both jobs running on the local backend, none held
                [tf] = await call(alice.taskforces, wf_id)
                diag = tf["diagnosis"]
                assert diag["backend"] == "local" and diag["jobs"]["running"] == 2
                assert diag["held"] == [] and diag["n_evictions"] == 0
                assert tf["task_counts"] == {"succeeded": 20, "failed": 6}

                # metrics: the server counted the tasks the reports added; the TMS its jobs
                _, _, samples = await scrape(srv)
                assert series(samples, "ewms_tasks_total") == {
                    (("outcome", "succeeded"),): 20.0,
                    (("outcome", "failed"),): 6.0,
                }
                tms_values = await call(tms_metrics, tms_log)
                assert tms_values[("ewms_tms_clusters", ())] == 1
                assert tms_values[("ewms_tms_jobs", (("state", "running"),))] == 2
                assert tms_values[("ewms_tms_submits_total", ())] == 1

                # retry: the 3 go back, fail twice more each, and are dead letters again
                r = await call(alice.request, "POST", f"/v1/workflows/{wf_id}/actions/retry-dead-letters", {})
                assert r == {"requeued": 3}

                async def failed_again() -> dict[str, Any] | None:
                    t = (await progress())["totals"]
                    return t if (t["succeeded"], t["failed"], t["dead_lettered"]) == (20, 12, 3) else None

                await wait_until(failed_again, 60, 0.2, what="the retried messages to fail again")

                await call(alice.finish, wf_id)
                await wait_until(
                    lambda: _all_complete(call(alice.taskforces, wf_id)),
                    30,
                    0.2,
                    what="condor-complete",
                )
        finally:
            if tms is not None:
                stop_process(tms)
            kill_pids(supervisor_pids(jobs))
            kill_pids(job_processes(uuids))
            for c in (alice, bob):
                c._rc.close()
            if wf_id:
                await asyncio.to_thread(delete_broker_leftovers, wf_id)


async def _all_complete(tfs: Any) -> bool:
    got = await tfs
    return bool(got) and all(tf["phase"] == "condor-complete" for tf in got)
