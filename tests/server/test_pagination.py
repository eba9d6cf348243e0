"""Queries page through thousands of documents in insertion order, inside the caller's scope."""

from __future__ import annotations

import pytest
from rest_tools.client import RestClient

from ewms_server.caller import Caller
from ewms_server.ops.workflows import create_workflow
from ewms_server.testing import RunningServer
from tests.conftest import workflow_body

N_ALICE, N_BOB = 2500, 300


@pytest.fixture
def backend() -> str | None:
    """SQLite. mongomock scans and copies every document per query: minutes at this size. The
    motor code path is covered by the other modules and, with a real MongoDB, test_real_mongodb."""
    return None


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"EWMS_QUERY_PAGE_DOCS": "400", "EWMS_QUERY_PAGE_BYTES": "200000"}


async def seed(server: RunningServer) -> list[str]:
    """Create workflows through the same code the handler runs (HTTP would only be slower)."""
    deps = server.deps
    ids = []
    for i in range(N_ALICE + N_BOB):
        owner = "alice" if i % 9 else "bob"
        made = await create_workflow(
            deps.store, deps.cfg.cluster_locations, Caller(owner, "user"), workflow_body(priority=i % 101)
        )
        if owner == "alice":
            ids.append(made["workflow"]["workflow_id"])
    return ids


async def page_all(client: RestClient, path: str, key: str, body: dict) -> tuple[list[dict], int]:
    out, pages, after = [], 0, None
    while True:
        res = await client.request("POST", path, {**body, **({"after": after} if after else {})})
        out.extend(res[key])
        pages += 1
        after = res["next_after"]
        if after is None:
            return out, pages
        assert pages < 1000


async def test_paginate_thousands(
    server: RunningServer, user: RestClient, user_b: RestClient, admin: RestClient
) -> None:
    alice_ids = await seed(server)
    assert len(alice_ids) > 2000
    docs, pages = await page_all(user, "/v1/query/workflows", "workflows", {"query": {}})
    assert [d["workflow_id"] for d in docs] == alice_ids  # every one once, in insertion order
    assert pages >= len(alice_ids) // 400
    assert {d["owner"] for d in docs} == {"alice"}

    # byte bound: taskforces are bigger, so pages are cut by bytes before 400 docs
    tfs, pages = await page_all(user, "/v1/query/taskforces", "taskforces", {"query": {}})
    assert len(tfs) == len(alice_ids) and pages > len(alice_ids) // 400 + 1
    assert len({t["taskforce_uuid"] for t in tfs}) == len(tfs)

    # projection and a filter
    hi, _ = await page_all(
        user,
        "/v1/query/workflows",
        "workflows",
        {"query": {"priority": {"$gte": 100}}, "projection": ["priority"]},
    )
    assert hi and all(d == {"priority": 100} for d in hi)

    bob_docs, _ = await page_all(user_b, "/v1/query/workflows", "workflows", {"query": {"owner": "alice"}})
    assert bob_docs == []
    all_docs, _ = await page_all(admin, "/v1/query/workflows", "workflows", {})
    assert len(all_docs) == N_ALICE + N_BOB


async def test_after_cannot_escape_scope(server: RunningServer, user: RestClient, user_b: RestClient) -> None:
    made = await user.request("POST", "/v1/workflows", workflow_body())
    res = await user_b.request("POST", "/v1/query/workflows", {"after": "WF-000000000000-0000-000000"})
    assert res == {"workflows": [], "next_after": None}
    res = await user.request("POST", "/v1/query/workflows", {"after": "WF-000000000000-0000-000000"})
    assert [w["workflow_id"] for w in res["workflows"]] == [made["workflow"]["workflow_id"]]
