"""A running server with the real broker for every client test; the workflows a test leaves
open are ended, and their broker users and vhosts must be gone before the next test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from rest_tools.client import RestClient

from ewms_server.testing import RunningServer, running_server
from tests.conftest import BROKER_URL, broker_objects_gone, wait_until
from tests.test_e2e_workflow import delete_broker_leftovers

SCHEDD = "client-tests-schedd"


@pytest.fixture
async def srv() -> AsyncIterator[RunningServer]:
    env = {
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
        "EWMS_LOOP_INTERVAL_S": "0.2",
        "EWMS_QUERY_PAGE_DOCS": "2",  # the CLI must follow next_after
    }
    async with running_server(
        cluster_locations={"local": SCHEDD}, broker_env={"EWMS_BROKER_URL": BROKER_URL}, env=env
    ) as s:
        yield s
        await _end_every_workflow(s)


async def _end_every_workflow(s: RunningServer) -> None:
    """Through the API, as an admin: abort what is open, then wait until the server has
    deleted every workflow's broker user and vhost (the broker is shared by the machine)."""
    admin = RestClient(s.url, s.token(role="admin", sub="test-cleanup"), retries=0)
    ids: list[str] = []
    body: dict[str, object] = {"query": {}, "projection": ["workflow_id", "deactivated"]}
    while True:
        page = await admin.request("POST", "/v1/query/workflows", body)
        for wf in page["workflows"]:
            ids.append(wf["workflow_id"])
            if wf["deactivated"] is None:
                await admin.request("POST", f"/v1/workflows/{wf['workflow_id']}/actions/abort", {})
        if not page.get("next_after"):
            break
        body["after"] = page["next_after"]
    admin.close()
    left = list(ids)

    async def all_gone() -> bool:
        left[:] = [w for w in left if not await asyncio.to_thread(broker_objects_gone, w)]
        return not left

    try:
        await wait_until(all_gone, 30, 0.2, what="the server deleting every workflow's broker objects")
    except AssertionError:
        for w in left:
            await asyncio.to_thread(delete_broker_leftovers, w)
        raise AssertionError(f"the server did not delete the broker objects of {left}") from None
