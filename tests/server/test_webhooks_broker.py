"""A workflow's webhook events through its life on the real broker (the RabbitMQ adapter),
with the TMS driven by hand: queues activated, first worker running, all input consumed (from
the cached progress figures: tasks done, nothing ready or in flight), finished -- in order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pika
from rest_tools.client import RestClient

from ewms_server.testing import running_server
from tests.broker.conftest import BROKER_URL
from tests.conftest import wait_until
from tests.server.helpers import submit, take_starter
from tests.server.test_progress_broker import cleanup, user_channel, workflow
from tests.server.webhook_receiver import Receiver, signed_by

SECRET = "broker-webhook-secret-0123456789"
SCHEDD = "webhook-schedd"


def push_and_consume(profile: dict[str, Any], n: int) -> None:
    """As a pilot would: n messages in, each taken and acknowledged."""
    ch = user_channel(profile)
    try:
        ch.confirm_delivery()
        for i in range(n):
            ch.basic_publish("", profile["mqid"], str(i).encode(), pika.BasicProperties(delivery_mode=2))
        for _ in range(n):
            method, _, _ = ch.basic_get(profile["mqid"])
            assert method is not None
            ch.basic_ack(method.delivery_tag)
    finally:
        ch.connection.close()


async def test_events_of_a_workflow_life_in_order_on_the_real_broker() -> None:
    receiver = Receiver().start()
    env = {
        "EWMS_LOOP_INTERVAL_S": "0.3",
        "EWMS_PROGRESS_CACHE_S": "0.2",
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
        "EWMS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "EWMS_WEBHOOK_SECRET": SECRET,
        "EWMS_WEBHOOK_INPUT_CHECK_S": "0.2",
    }
    async with running_server(
        cluster_locations={"local": SCHEDD}, broker_env={"EWMS_BROKER_URL": BROKER_URL}, env=env
    ) as srv:
        user = RestClient(srv.url, token=srv.token(role="user", sub="alice"), retries=0, timeout=30)
        tms = RestClient(srv.url, token=srv.token(role="system-tms", sub="tms"), retries=0, timeout=30)
        wid = ""
        try:
            created = await user.request(
                "POST", "/v1/workflows", {**workflow(), "notify_url": receiver.url()}
            )
            wid, uuid = created["workflow"]["workflow_id"], created["taskforces"][0]["taskforce_uuid"]
            await take_starter(tms, SCHEDD, timeout=40)
            await submit(tms, uuid)
            report: dict[str, Any] = {
                "compound_statuses_by_taskforce": {uuid: {"RUNNING": {"Tasking": 2}}},
                "top_task_errors_by_taskforce": {},
            }
            await tms.request("POST", "/v1/tms/statuses/taskforces", report)
            profiles = (await user.request("GET", f"/v1/workflows/{wid}/mq-profiles/public"))["mqprofiles"]
            inq = next(p for p in profiles if p["alias"] == "in")
            await asyncio.to_thread(push_and_consume, inq, 3)

            # the input queue is empty, but no task has been counted yet: no input-consumed
            async def empty() -> bool:
                srv.deps.progress.forget(wid)
                t = (await user.request("GET", f"/v1/workflows/{wid}/progress"))["totals"]
                return (t["pending"], t["in_flight"], t["succeeded"]) == (0, 0, 0)

            await wait_until(empty, timeout=30, interval=0.2)
            loop = srv.deps.loops["webhooks"]
            passes = loop.n_passes

            async def watched_twice() -> bool:
                loop.wake.set()
                return loop.n_passes >= passes + 2 and srv.deps.loops["webhooks"].last_error is None

            await wait_until(watched_twice, timeout=10)
            assert not await srv.deps.store.count("webhook_outbox", {"event_key": f"{wid}:input-consumed"})

            report["task_counts_by_taskforce"] = {uuid: {"succeeded": 3, "failed": 0}}
            await tms.request("POST", "/v1/tms/statuses/taskforces", report)

            async def consumed() -> bool:
                return "input-consumed" in receiver.events()

            await wait_until(consumed, timeout=30)
            await user.request("POST", f"/v1/workflows/{wid}/actions/finished")

            async def finished() -> bool:
                return "workflow-finished" in receiver.events()

            await wait_until(finished, timeout=30)
            assert receiver.events() == [
                "queues-activated",
                "first-worker-running",
                "input-consumed",
                "workflow-finished",
            ]
            assert all(signed_by(SECRET, h) for h in receiver.hits)
            body = json.loads(receiver.delivered()[2].body)
            assert (body["succeeded"], body["failed"], body["dead_lettered"]) == (3, 0, 0)
            wf = await srv.deps.store.get("workflows", {"workflow_id": wid})
            assert wf is not None and wf["notify_watch"] is False
        finally:
            user.close()
            tms.close()
            receiver.stop()
            if wid:
                await asyncio.to_thread(cleanup, wid)
