"""A black-hole machine caught and quarantined, end to end, every part real.

The server in-process with RabbitMQ (task delivery limit 10), ``ewms-tms`` with the local
backend and two simulated machines: m1 (6 slots) and m2 (6 slots, broken: every task started
there fails at once). 60 short tasks run by 4 real pilots, spread over both machines. The
pilots on m2 fail their tasks and return the messages; the server counts the failures per
machine and quarantines m2; the TMS sends m2's pilots away (SIGTERM: they return what they
hold) and their jobs start again on m1. Every result comes out exactly once, m2 is
quarantined and m1 is not, and jobs submitted afterwards never run on m2.

``machines_system`` (server + TMS with given machines) is meant for reuse by other e2e tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.broker.rabbitmq import dead_letter_queue
from ewms_server.testing import RunningServer, running_server
from tests.conftest import wait_until
from tests.processes import stop_process
from tests.test_e2e_workflow import (
    BROKER_URL,
    SCHEDD,
    broker_queue_depths,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    start_tms,
    supervisor_pids,
    workflow_request,
)
from tests.tms.isolation import job_root

N_MESSAGES = 60
N_WORKERS = 4
MACHINES = {"m1": {"slots": 6}, "m2": {"slots": 6, "broken": True}}
TEST_BUDGET_S = 150
_SLOT = re.compile(r"^001 \((\d+)\.(\d+)\.\d+\) .*\n\tSlotName: slot\d+@(\S+)$", re.MULTILINE)


@dataclass
class MachinesSystem:
    srv: RunningServer
    jobs: Path
    tms: subprocess.Popen[bytes]
    client: EWMSClient
    workflow_ids: list[str] = field(default_factory=list)

    async def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """The client blocks; the server runs on this very loop."""
        return await asyncio.to_thread(fn, *args, **kw)

    async def quarantine(self, role: str = "admin", sub: str = "root") -> list[dict[str, Any]]:
        from rest_tools.client import RestClient

        rc = RestClient(self.srv.url, self.srv.token(role=role, sub=sub), retries=0)
        try:
            return list((await rc.request("GET", "/v1/quarantine"))["machines"])
        finally:
            rc.close()


@contextlib.asynccontextmanager
async def machines_system(
    tmp_path: Path,
    machines: dict[str, dict[str, Any]],
    *,
    server_env: dict[str, str] | None = None,
    broker_env: dict[str, str] | None = None,
    tms_env: dict[str, str] | None = None,
) -> AsyncIterator[MachinesSystem]:
    """A server (real broker) and a local-backend TMS whose jobs run on ``machines``
    (EWMS_TMS_LOCAL_MACHINES); everything it started is stopped and cleaned up after."""
    jobs = Path(job_root(tmp_path.name)) / "jobs"
    async with running_server(
        cluster_locations={"local": SCHEDD},
        broker_env={"EWMS_BROKER_URL": BROKER_URL, **(broker_env or {})},
        env={"EWMS_LOOP_INTERVAL_S": "0.5", "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0", **(server_env or {})},
    ) as srv:
        tms = start_tms(
            srv,
            jobs,
            tmp_path / "tms.log",
            extra_env={
                "EWMS_TMS_LOCAL_MACHINES": json.dumps(machines),
                "EWMS_TMS_QUARANTINE_INTERVAL": "0.2",
                **(tms_env or {}),
            },
        )
        system = MachinesSystem(srv, jobs, tms, EWMSClient(srv.url, srv.token(role="user", sub="alice")))
        try:
            yield system
        finally:
            stop_process(tms)
            kill_pids(supervisor_pids(jobs))
            with contextlib.suppress(OSError):
                uuids = {p.name for p in jobs.iterdir() if p.name.startswith("TF-")}
                kill_pids(job_processes(uuids))
            system.client._rc.close()
            for wf_id in system.workflow_ids:
                await asyncio.to_thread(delete_broker_leftovers, wf_id)


def square_workflow(n_workers: int) -> dict[str, Any]:
    """The e2e workflow's first task alone (square.py, numbers -> results), one task at a time
    per pilot, counts chirped often."""
    body = workflow_request()
    task = body["tasks"][0]
    task["output_queue_aliases"] = ["results"]
    task["n_workers"] = n_workers
    task["pilot_config"]["environment"].update(
        {"EWMS_PILOT_MAX_CONCURRENT_TASKS": "1", "EWMS_PILOT_CHIRP_INTERVAL": "0.2"}
    )
    body["tasks"] = [task]
    return body


def executions(log: Path) -> list[tuple[int, str]]:
    """(proc, machine) of every execute event of a job event log, in order."""
    return [(int(m[2]), m[3]) for m in _SLOT.finditer(log.read_text())] if log.exists() else []


async def test_black_hole_machine_is_quarantined_and_every_result_comes_out_once(tmp_path: Path) -> None:
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        machines_system(tmp_path, MACHINES, broker_env={"EWMS_BROKER_TASK_DELIVERY_LIMIT": "10"}) as system,
    ):
        c, call = system.client, system.call
        created = await call(c.submit, square_workflow(N_WORKERS))
        wf_id = created["workflow"]["workflow_id"]
        system.workflow_ids.append(wf_id)
        (tf,) = created["taskforces"]
        log = system.jobs / tf["taskforce_uuid"] / "job-events.log"
        directive = created["task_directives"][0]
        mqids = [*directive["input_queues"], *directive["output_queues"]]

        push_q = await call(c.pick_queue, wf_id, "numbers", "push", 30)
        pull_q = await call(c.pick_queue, wf_id, "results", "pull", 30)
        numbers = list(range(N_MESSAGES))
        assert await call(queues.push, push_q, (str(n).encode() for n in numbers)) == N_MESSAGES

        # the pilots are spread over both machines: m2's fail every task they take
        first = await wait_until(
            lambda: asyncio.to_thread(
                lambda: executions(log)[:N_WORKERS] if len(executions(log)) >= N_WORKERS else None
            ),
            40,
            0.25,
            what="4 jobs started",
        )
        assert Counter(m for _, m in first) == {"m1": 2, "m2": 2}

        # m2's black hole is quarantined; m1 is not. Before that, m2's pilots may have used up
        # the deliveries of a few messages (RabbitMQ returns a failed message to the head of
        # its queue, and m2 fails it again within milliseconds): those are dead-lettered,
        # never lost, and come back once retried
        entries = await wait_until(system.quarantine, 30, 0.25, what="a quarantine entry")
        results: list[bytes] = []

        async def all_accounted() -> bool:
            await call(queues.pull, pull_q, results.append, n=None, timeout=0.5)
            depths = await call(broker_queue_depths, wf_id, mqids)
            return len(results) + depths[dead_letter_queue(push_q.mqid)] == N_MESSAGES

        await wait_until(all_accounted, 60, 0.25, what="every message as a result or a dead letter")
        n_dead = N_MESSAGES - len(results)
        if n_dead:
            r = await call(c.request, "POST", f"/v1/workflows/{wf_id}/actions/retry-dead-letters")
            assert r == {"requeued": n_dead}
            got = await call(queues.pull, pull_q, results.append, n=n_dead, timeout=60)
            assert got == n_dead
        assert await call(queues.pull, pull_q, results.append, n=None, timeout=1.5) == 0
        assert Counter(int(r) for r in results) == Counter(n * n for n in numbers)  # each exactly once
        depths = await call(broker_queue_depths, wf_id, mqids)
        assert depths == {q: 0 for m in mqids for q in (m, dead_letter_queue(m))}
        print(f"dead-lettered before the quarantine: {n_dead}; entry: {entries}")

        # m2 is quarantined, m1 is not; alice sees it too (her taskforce ran there)
        assert [(e["machine"], e["location"]) for e in entries] == [("m2", "local")]
        assert entries[0]["until"] > entries[0]["since"] and "failures" in entries[0]["reason"]
        assert [e["machine"] for e in await system.quarantine("user", "alice")] == ["m2"]
        assert await system.quarantine("user", "bob") == []

        # m2's jobs left it (evicted: a reschedule, not a failure) and ran again on m1 only
        await wait_until(
            lambda: asyncio.to_thread(
                lambda: Counter(m for _, m in executions(log)[N_WORKERS:]) == {"m1": 2}
            ),
            30,
            0.25,
            what="m2's jobs to run again on m1",
        )
        text = log.read_text()
        assert text.count("Job was evicted") == 2
        server_tf = await wait_until(
            lambda: _tf_when(
                c, call, tf["taskforce_uuid"], lambda t: (t.get("diagnosis") or {}).get("n_evictions") == 2
            ),
            20,
            0.25,
            what="the evictions in the diagnosis",
        )
        assert server_tf["diagnosis"]["jobs"]["running"] == N_WORKERS

        # new jobs (added workers) carry the exclusion and are never placed on m2
        added = await call(
            c.request,
            "POST",
            f"/v1/task-directives/{directive['task_id']}/actions/add-workers",
            {"cluster_location": "local", "n_workers": 2},
        )
        new_log = system.jobs / added["taskforce_uuid"] / "job-events.log"
        await wait_until(
            lambda: asyncio.to_thread(lambda: len(executions(new_log)) == 2),
            30,
            0.25,
            what="the added jobs to start",
        )
        assert {m for _, m in executions(new_log)} == {"m1"}
        new_tf = await _tf_when(c, call, added["taskforce_uuid"], lambda t: t["phase"] == "condor-submit")
        assert new_tf is not None and 'Machine isnt "m2"' in new_tf["submit_dict"]["requirements"]

        await call(c.finish, wf_id)
        await wait_until(
            lambda: asyncio.to_thread(lambda: not supervisor_pids(system.jobs)),
            30,
            0.25,
            what="the clusters to end",
        )
        assert system.tms.poll() is None, "the TMS died"


async def _tf_when(c: EWMSClient, call: Any, uuid: str, cond: Any) -> dict[str, Any] | None:
    tf = await call(c.request, "GET", f"/v1/taskforces/{uuid}")
    return tf if cond(tf) else None
