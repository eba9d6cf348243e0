"""GET /metrics, read with prometheus_client's own text parser, against what the API says."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rest_tools.client import RestClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, workflow_body
from tests.server.helpers import create, submit, take_starter

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TOKEN = "scraper-token-0123456789abcdef"


async def scrape(srv: RunningServer, token: str | None = None) -> tuple[int, str, Samples]:
    token = token or srv.token(role="admin", sub="root")
    try:
        r = await AsyncHTTPClient().fetch(srv.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    except HTTPClientError as e:
        assert e.response is not None
        return e.code, e.response.body.decode(), {}
    text = r.body.decode()
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return r.code, text, samples


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_counts_match_the_api_and_requests_are_labelled_by_template(backend: str | None) -> None:
    async with running_server(
        cluster_locations=LOCATIONS,
        mongodb_url=backend,
        env={"EWMS_LOOP_INTERVAL_S": "1", "EWMS_METRICS_CACHE_S": "0"},
    ) as srv:
        user = RestClient(srv.url, token=srv.token(role="user", sub="alice"), retries=0, timeout=30)
        tms = RestClient(srv.url, token=srv.token(role="system-tms", sub="tms-1"), retries=0, timeout=30)
        admin = RestClient(srv.url, token=srv.token(role="admin", sub="root"), retries=0, timeout=30)
        created = [
            await create(user, workflow_body(n_tasks=2, locations=("local", "remote"))) for _ in range(3)
        ]
        offered = await take_starter(tms)  # one submitted, one aborted workflow: several phases
        await submit(tms, offered["taskforce"]["taskforce_uuid"])
        await user.request("POST", f"/v1/workflows/{created[2]['workflow']['workflow_id']}/actions/abort")

        async def settled() -> list[dict[str, Any]]:
            tfs = (await admin.request("POST", "/v1/query/taskforces", {"projection": ["phase", "schedd"]}))[
                "taskforces"
            ]
            moving = {"pre-mq-activation", "pre-launch"}
            return [] if any(t["phase"] in moving for t in tfs) else tfs

        from tests.conftest import wait_until

        tfs = await wait_until(settled, timeout=20)
        wid = created[0]["workflow"]["workflow_id"]
        for _ in range(7):
            await user.request("GET", f"/v1/workflows/{wid}")
        code, text, samples = await scrape(srv)
        assert code == 200
        # taskforces by phase and schedd: exactly what the API lists
        api = Counter((t["phase"], t["schedd"]) for t in tfs)
        got = {
            (dict(labels)["phase"], dict(labels)["schedd"]): v
            for labels, v in series(samples, "ewms_taskforces").items()
        }
        assert got == {k: float(v) for k, v in api.items()}
        assert {p for p, _ in got} >= {"pending-starter", "condor-submit", "cancelled"}
        assert series(samples, "ewms_workflows") == {
            (("state", "active"),): 2.0,
            (("state", "ABORTED"),): 1.0,
        }
        # request durations: by route template, never by raw path (no id in any label)
        route = (("method", "GET"), ("route", "/v1/workflows/{workflow_id}"), ("status", "200"))
        assert series(samples, "ewms_http_request_duration_seconds_count")[route] == 7.0
        assert "WF-" not in text and "TF-" not in text
        # background loops and broker calls are measured (the null adapter activates queues)
        loops = series(samples, "ewms_loop_pass_duration_seconds_count")
        assert loops[(("loop", "mq_activation"),)] >= 1 and loops[(("loop", "launch_control"),)] >= 1
        calls = series(samples, "ewms_broker_calls_total")
        assert calls[(("method", "activate_workflow"),)] == 3.0
        # an unknown path is one label value, whatever its path
        await asyncio.gather(*(_status(srv, f"/nowhere/{i}") for i in range(3)))
        _, _, samples = await scrape(srv)
        unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
        assert series(samples, "ewms_http_request_duration_seconds_count")[unmatched] == 3.0
        for c in (user, tms, admin):
            c.close()


async def _status(srv: RunningServer, path: str) -> int:
    try:
        return (await AsyncHTTPClient().fetch(srv.url + path)).code
    except HTTPClientError as e:
        return e.code


async def test_tasks_total_counts_what_reports_add(
    server: RunningServer, user: RestClient, tms: RestClient
) -> None:
    created = await create(user, workflow_body(n_tasks=1))
    uuid = (await take_starter(tms))["taskforce"]["taskforce_uuid"]
    assert uuid == created["taskforces"][0]["taskforce_uuid"]
    await submit(tms, uuid)
    path = "/v1/tms/statuses/taskforces"
    for s, f in ((3, 1), (7, 1), (7, 2), (5, 2)):  # a count going down (an older log) adds nothing
        await tms.request("POST", path, {"task_counts_by_taskforce": {uuid: {"succeeded": s, "failed": f}}})
    # an unknown taskforce adds nothing either (its result says so)
    unknown = {"TF-000000000000-0000-000000": {"succeeded": 99, "failed": 0}}
    r = await tms.request("POST", path, {"task_counts_by_taskforce": unknown})
    assert r["results"][0]["status"] == "failed"
    _, _, samples = await scrape(server)
    assert series(samples, "ewms_tasks_total") == {
        (("outcome", "succeeded"),): 7.0,
        (("outcome", "failed"),): 2.0,
    }


async def test_metrics_token_and_switch(backend: str | None) -> None:
    env = {"EWMS_METRICS_TOKEN": TOKEN, "EWMS_METRICS_CACHE_S": "3600"}
    async with running_server(cluster_locations=LOCATIONS, mongodb_url=backend, env=env) as srv:
        code, _, before = await scrape(srv, TOKEN)
        assert code == 200
        assert (await scrape(srv, TOKEN[:-1] + "x"))[0] == 401  # not the token, and not a JWT
        assert (await scrape(srv, srv.token(role="user", sub="alice")))[0] == 403
        # counts are reused for EWMS_METRICS_CACHE_S
        user = RestClient(srv.url, token=srv.token(role="user", sub="alice"), retries=0, timeout=30)
        await create(user, workflow_body())
        _, _, after = await scrape(srv, TOKEN)
        assert series(after, "ewms_workflows") == series(before, "ewms_workflows") == {}
        user.close()
    async with running_server(
        cluster_locations=LOCATIONS, mongodb_url=backend, env={"EWMS_METRICS_ENABLED": "false"}
    ) as srv:
        code, body, _ = await scrape(srv)
        assert code == 404 and "metrics are off" in body
