"""Webhooks end to end, every part real: the server with the RabbitMQ adapter, ``ewms-tms``
with the local backend and real pilots running ``resources/examples/tasks/square.py``, and a
receiver that refuses each delivery once. 8 numbers go in and come out squared; the receiver
gets, in order and signed: queues activated, first worker running, input consumed (8
succeeded), workflow finished -- each exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.testing import running_server
from tests.processes import stop_process
from tests.server.webhook_receiver import Receiver, fail_first, signed_by
from tests.test_e2e_progress import workflow_request
from tests.test_e2e_workflow import (
    BROKER_URL,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    poll,
    start_tms,
    supervisor_pids,
)
from tests.tms.isolation import job_root

SCHEDD = "e2e-webhooks-schedd"
SECRET = "e2e-webhook-secret-0123456789"
NUMBERS = [str(n) for n in range(8)]
EVENTS = ["queues-activated", "first-worker-running", "input-consumed", "workflow-finished"]


async def test_webhooks_of_a_real_workflow(tmp_path: Path) -> None:
    jobs = Path(job_root(tmp_path.name)) / "jobs"
    receiver = Receiver(plan=fail_first(1)).start()
    tms = None
    wf_id, uuids = "", set()
    async with running_server(
        cluster_locations={"local": SCHEDD},
        broker_env={"EWMS_BROKER_URL": BROKER_URL},
        env={
            "EWMS_LOOP_INTERVAL_S": "0.5",
            "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
            "EWMS_PROGRESS_CACHE_S": "1",
            "EWMS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "EWMS_WEBHOOK_SECRET": SECRET,
            "EWMS_WEBHOOK_RETRY_BASE_S": "0.1",
            "EWMS_WEBHOOK_INPUT_CHECK_S": "0.5",
        },
    ) as srv:
        alice = EWMSClient(srv.url, srv.token(role="user", sub="alice"))

        async def call(fn: Any, *args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kw)  # the server runs on this loop

        try:
            async with asyncio.timeout(150):
                created = await call(alice.submit, {**workflow_request(), "notify_url": receiver.url()})
                wf_id = created["workflow"]["workflow_id"]
                uuids = {tf["taskforce_uuid"] for tf in created["taskforces"]}
                tms = start_tms(srv, jobs, tmp_path / "tms.log", schedd=SCHEDD)
                push_q = await call(alice.pick_queue, wf_id, None, "push", 30)
                pull_q = await call(alice.pick_queue, wf_id, None, "pull", 30)
                assert await call(queues.push, push_q, (m.encode() for m in NUMBERS)) == len(NUMBERS)
                results: list[bytes] = []
                assert await call(queues.pull, pull_q, results.append, n=len(NUMBERS), timeout=60) == 8
                assert sorted(int(r) for r in results) == sorted(int(n) ** 2 for n in NUMBERS)

                async def consumed() -> bool:
                    return "input-consumed" in receiver.events()

                await poll(consumed, "the input-consumed webhook", 60)
                await call(alice.finish, wf_id)

                async def finished() -> bool:
                    return "workflow-finished" in receiver.events()

                await poll(finished, "the workflow-finished webhook", 30)
                assert receiver.events() == EVENTS
                assert Counter(h.delivery_id for h in receiver.hits) == {
                    h.delivery_id: 2 for h in receiver.delivered()
                }  # each refused once, then delivered once
                assert all(signed_by(SECRET, h) for h in receiver.hits)
                assert json.loads(receiver.delivered()[2].body)["succeeded"] == len(NUMBERS)
        finally:
            receiver.stop()
            if tms is not None:
                stop_process(tms)
            kill_pids(supervisor_pids(jobs))
            kill_pids(job_processes(uuids))
            alice._rc.close()
            if wf_id:
                await asyncio.to_thread(delete_broker_leftovers, wf_id)
