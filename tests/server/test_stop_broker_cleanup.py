"""Stopping the server leaves no broker objects of ended workflows behind (issue 10 B7): on the
real RabbitMQ, with the default day of grace before queues are deleted."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import requests
from rest_tools.client import RestClient

from ewms_client import queues
from ewms_client.client import EWMSClient
from ewms_server.broker.rabbitmq import RabbitMQSettings, username_for, vhost_for
from ewms_server.testing import running_server
from tests.conftest import BROKER_URL, broker_objects_gone, wait_until, workflow_body
from tests.test_e2e_workflow import delete_broker_leftovers


async def activated_workflows(srv: Any, user: RestClient, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        made = await user.request("POST", "/v1/workflows", workflow_body())
        ids.append(made["workflow"]["workflow_id"])
    for wid in ids:

        async def activated(wid: str = wid) -> bool:
            got = await user.request("GET", f"/v1/workflows/{wid}/mq-profiles/public")
            return all(p["is_activated"] for p in got["mqprofiles"])

        await wait_until(activated, 30, 0.1, what=f"{wid}'s queues activated")
    return ids


async def test_stop_removes_ended_workflows_broker_objects_and_keeps_active_ones() -> None:
    ids: list[str] = []
    try:
        async with running_server(
            broker_env={"EWMS_BROKER_URL": BROKER_URL}, env={"EWMS_LOOP_INTERVAL_S": "0.2"}
        ) as srv:
            user = RestClient(srv.url, srv.token(), retries=0)
            ids = await activated_workflows(srv, user, 3)
            aborted, finished, active = ids
            await user.request("POST", f"/v1/workflows/{aborted}/actions/abort", {})
            await user.request("POST", f"/v1/workflows/{finished}/actions/finished", {})
            user.close()
            for wid in ids:  # all still there while the server runs (their taskforces never ran)
                assert not await asyncio.to_thread(broker_objects_gone, wid)
        assert await asyncio.to_thread(broker_objects_gone, aborted)
        assert await asyncio.to_thread(broker_objects_gone, finished)
        assert not await asyncio.to_thread(broker_objects_gone, active)  # its users may still push
    finally:
        for wid in ids:
            await asyncio.to_thread(delete_broker_leftovers, wid)


async def test_cleanup_on_stop_can_be_turned_off() -> None:
    ids: list[str] = []
    try:
        async with running_server(
            broker_env={"EWMS_BROKER_URL": BROKER_URL},
            env={"EWMS_LOOP_INTERVAL_S": "0.2", "EWMS_BROKER_CLEANUP_ON_STOP_S": "0"},
        ) as srv:
            user = RestClient(srv.url, srv.token(), retries=0)
            ids = await activated_workflows(srv, user, 1)
            await user.request("POST", f"/v1/workflows/{ids[0]}/actions/abort", {})
            user.close()
        assert not await asyncio.to_thread(broker_objects_gone, ids[0])  # left for its grace period
    finally:
        for wid in ids:
            await asyncio.to_thread(delete_broker_leftovers, wid)


def _management() -> tuple[str, Any]:
    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": BROKER_URL})
    return s.management_url.rstrip("/") + "/api", s.admin_auth


def _on_broker(workflow_id: str) -> tuple[bool, bool]:
    """(its broker user exists, its vhost exists)."""
    api, auth = _management()
    user = requests.get(f"{api}/users/{quote(username_for(workflow_id), safe='')}", auth=auth, timeout=5)
    vhost = requests.get(f"{api}/vhosts/{vhost_for(workflow_id)}", auth=auth, timeout=5)
    return user.status_code == 200, vhost.status_code == 200


def _messages_counted(workflow_id: str) -> bool:
    api, auth = _management()
    got = requests.get(f"{api}/queues/{vhost_for(workflow_id)}", auth=auth, timeout=5)
    return sum(q.get("messages") or 0 for q in got.json()) > 0


async def test_stop_keeps_the_queues_of_an_ended_workflow_holding_messages() -> None:
    """Nothing is lost to a stop: a message nobody pulled keeps its queues for the grace
    period; the workflow's broker user is revoked all the same."""
    ids: list[str] = []
    try:
        async with running_server(
            broker_env={"EWMS_BROKER_URL": BROKER_URL}, env={"EWMS_LOOP_INTERVAL_S": "0.2"}
        ) as srv:
            user = RestClient(srv.url, srv.token(), retries=0)
            ids = await activated_workflows(srv, user, 2)
            kept, emptied = ids
            client = EWMSClient(srv.url, srv.token())
            profiles = await asyncio.to_thread(client.public_queues, kept)  # a blocking client
            profile = next(p for p in profiles if p.alias == "q0")
            assert await asyncio.to_thread(queues.push, profile, [b"unread"]) == 1
            # the management API's figures lag up to 5 s: wait until they show the message
            await wait_until(
                lambda: asyncio.to_thread(_messages_counted, kept), 30, 0.5, what="the message counted"
            )
            for wid in ids:
                await user.request("POST", f"/v1/workflows/{wid}/actions/finished", {})
            user.close()
        assert await asyncio.to_thread(_on_broker, kept) == (False, True)
        assert await asyncio.to_thread(broker_objects_gone, emptied)
    finally:
        for wid in ids:
            await asyncio.to_thread(delete_broker_leftovers, wid)
