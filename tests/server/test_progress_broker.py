"""Progress and dead-letter retry through the server, on the real broker (the RabbitMQ adapter)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pika
import requests
from rest_tools.client import RestClient

from ewms_pilot.broker import connection_url
from ewms_server.broker.rabbitmq import dead_letter_queue, leftover_paths, vhost_for
from ewms_server.testing import running_server
from tests.broker.conftest import broker_settings
from tests.conftest import BROKER_URL, wait_until, workflow_body
from tests.server.helpers import error_of
from tests.server.test_metrics import scrape, series


def workflow() -> dict[str, Any]:
    """One task reading public queue `in`, writing public queue `out`."""
    body = workflow_body(n_tasks=1)
    body["tasks"][0].update(input_queue_aliases=["in"], output_queue_aliases=["out"])
    body["public_queue_aliases"] = ["in", "out"]
    return body


def user_channel(profile: dict[str, Any]) -> pika.adapters.blocking_connection.BlockingChannel:
    url = connection_url(profile["broker_address"], profile["auth_token"])
    return pika.BlockingConnection(pika.URLParameters(url)).channel()


def push_and_fail(profile: dict[str, Any], n_good: int, n_bad: int) -> None:
    """As the workflow's user: n_good + n_bad messages in; the n_bad fail twice (limit 1) and
    end as dead letters."""
    ch = user_channel(profile)
    try:
        ch.confirm_delivery()
        for body in [b"bad"] * n_bad + [b"good"] * n_good:
            ch.basic_publish("", profile["mqid"], body, pika.BasicProperties(delivery_mode=2), mandatory=True)
        # a returned message goes back to the head of a quorum queue: each bad one is
        # delivered twice in a row, and the second return dead-letters it
        for _ in range(2 * n_bad):
            method, _, body = ch.basic_get(profile["mqid"])
            assert method is not None and body == b"bad"
            ch.basic_nack(method.delivery_tag, requeue=True)
        deadline = time.monotonic() + 30
        while ch.queue_declare(dead_letter_queue(profile["mqid"]), passive=True).method.message_count < n_bad:
            assert time.monotonic() < deadline, "not dead-lettered"
            time.sleep(0.05)
    finally:
        ch.connection.close()


async def activated_profile(user: RestClient, workflow_id: str, alias: str) -> dict[str, Any]:
    """The public queue `alias` of the workflow, once the server activated it on the broker."""

    async def activated() -> dict[str, Any] | None:
        profiles = (await user.request("GET", f"/v1/workflows/{workflow_id}/mq-profiles/public"))[
            "mqprofiles"
        ]
        return next((p for p in profiles if p["alias"] == alias and p["is_activated"]), None)

    profile: dict[str, Any] = await wait_until(activated, timeout=40, interval=0.3)
    return profile


def cleanup(workflow_id: str) -> None:
    s = broker_settings()
    for path in leftover_paths(workflow_id):
        with contextlib.suppress(requests.RequestException):
            requests.delete(s.management_url + "/api" + path, auth=s.admin_auth, timeout=5)


async def test_queue_depths_dead_letters_and_retry_on_the_real_broker() -> None:
    env = {
        "EWMS_LOOP_INTERVAL_S": "0.5",
        "EWMS_PROGRESS_CACHE_S": "2",
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
        "EWMS_BROKER_REVOKE_MAX_WAIT_S": "0",
    }
    broker_env = {"EWMS_BROKER_URL": BROKER_URL, "EWMS_BROKER_TASK_DELIVERY_LIMIT": "1"}
    async with running_server(
        cluster_locations={"local": "progress-schedd"}, broker_env=broker_env, env=env
    ) as srv:
        user = RestClient(srv.url, token=srv.token(role="user", sub="alice"), retries=0, timeout=30)
        wid = ""
        try:
            created = await user.request("POST", "/v1/workflows", workflow())
            wid = created["workflow"]["workflow_id"]
            inq = await activated_profile(user, wid, "in")
            await asyncio.to_thread(push_and_fail, inq, 4, 3)

            async def figures() -> dict[str, Any] | None:
                p = await user.request("GET", f"/v1/workflows/{wid}/progress")
                q = p["queues"]["in"]
                return p if (q["pending"], q["in_flight"], q["dead_lettered"]) == (4, 0, 3) else None

            p = await wait_until(figures, timeout=40, interval=0.3)
            assert p["totals"]["pending"] == 4 and p["totals"]["dead_lettered"] == 3
            assert p["queues"]["out"]["pending"] == 0 and p["queues"]["in"]["mqid"] == inq["mqid"]
            assert "broker_error" not in p and p["broker_ts"] is not None
            assert p["eta_s"] is None  # nothing has succeeded yet: no rate, no ETA

            # many clients at once: one broker call between them
            _, _, before = await scrape(srv)
            key = (("method", "queue_depths"),)
            srv.deps.progress.forget(wid)
            await asyncio.gather(*(user.request("GET", f"/v1/workflows/{wid}/progress") for _ in range(30)))
            _, _, after = await scrape(srv)
            calls = (
                series(after, "ewms_broker_calls_total")[key] - series(before, "ewms_broker_calls_total")[key]
            )
            assert calls == 1

            # retry: the 3 dead letters go back to the queue
            assert await user.request("POST", f"/v1/workflows/{wid}/actions/retry-dead-letters") == {
                "requeued": 3
            }

            async def requeued() -> bool:
                q = (await user.request("GET", f"/v1/workflows/{wid}/progress"))["queues"]["in"]
                return (q["pending"], q["dead_lettered"]) == (7, 0)

            await wait_until(requeued, timeout=40, interval=0.3)

            # another user: 404, nothing moved
            bob = RestClient(srv.url, token=srv.token(role="user", sub="bob"), retries=0, timeout=30)
            path = f"/v1/workflows/{wid}/actions/retry-dead-letters"
            assert (await error_of(bob.request("POST", path)))[0] == 404
            bob.close()

            # once the workflow ended and its queues were deleted: 422, and progress says why
            await user.request("POST", f"/v1/workflows/{wid}/actions/finished")

            async def deleted() -> bool:
                wf = await srv.deps.store.get("workflows", {"workflow_id": wid})
                return bool(wf["queues_deleted"])

            await wait_until(deleted, timeout=40, interval=0.3)
            code, body = await error_of(user.request("POST", path))
            assert code == 422 and "deleted" in body["error"]
            srv.deps.progress.forget(wid)
            p = await user.request("GET", f"/v1/workflows/{wid}/progress")
            assert p["deactivated"] == "FINISHED" and "deleted" in p["broker_error"]
            assert p["queues"]["in"]["pending"] is None
            assert (
                requests.get(
                    broker_settings().management_url + f"/api/vhosts/{vhost_for(wid)}",
                    auth=broker_settings().admin_auth,
                    timeout=5,
                ).status_code
                == 404
            )
        finally:
            user.close()
            if wid:
                await asyncio.to_thread(cleanup, wid)
