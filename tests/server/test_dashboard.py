"""The web dashboard and Swagger UI in a real browser (Debian's headless chromium through
Playwright): the pages load without console errors, show the numbers the API answers, sign in
by a pasted token, show a user only its workflows, and render the admin pages. Screenshots go
to $EWMS_TEST_ARTIFACTS (default test-artifacts/)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from rest_tools.client import RestClient

from ewms_server.testing import RunningServer, running_server
from tests.broker.conftest import BROKER_URL
from tests.conftest import LOCATIONS, wait_until, workflow_body
from tests.server.browser import Tab, browser_tab
from tests.server.helpers import create, error_of, submit, take_starter
from tests.server.oidc_issuer import oidc_env, running_issuer
from tests.server.test_progress_broker import activated_profile, cleanup, push_and_fail
from tests.server.test_progress_broker import workflow as broker_workflow


@dataclass
class Scene:
    srv: RunningServer
    alice: RestClient
    bob: RestClient
    admin: RestClient
    running: str
    """alice's workflow whose taskforces were submitted and reported on."""
    aborted: str
    """alice's aborted workflow."""
    bobs: str


async def _report(tms: RestClient, **by_uuid: Any) -> None:
    await tms.request("POST", "/v1/tms/statuses/taskforces", by_uuid)


async def _scene(srv: RunningServer) -> Scene:
    def client(role: str, sub: str) -> RestClient:
        return RestClient(srv.url, token=srv.token(role=role, sub=sub), retries=0, timeout=30)

    alice, bob, admin, tms = (
        client("user", "alice"),
        client("user", "bob"),
        client("admin", "root"),
        client("system-tms", "tms"),
    )
    running = await create(alice, workflow_body(n_tasks=2))
    uuids = []
    for i in range(2):
        offered = await take_starter(tms)
        uuids.append(offered["taskforce"]["taskforce_uuid"])
        await submit(tms, uuids[-1], cluster_id=500 + i)
    u1, u2 = uuids
    for n in (1, 2, 3):  # three reports: a history of three samples
        await _report(
            tms,
            compound_statuses_by_taskforce={
                u1: {"RUNNING": {"Tasking": 2}},
                u2: {"IDLE": {"None": 1}, "HELD: out of memory": {"None": 1}},
            },
            top_task_errors_by_taskforce={u1: {"ValueError: bad input": n, "timeout": 1}},
            task_counts_by_taskforce={
                u1: {"succeeded": 10 * n, "failed": n},
                u2: {"succeeded": 4 * n, "failed": 0},
            },
        )
    await tms.request(
        "POST", f"/v1/tms/condor-complete/taskforces/{u2}", {"condor_complete_ts": 1_700_000_000.0}
    )
    aborted = await create(alice, workflow_body(n_tasks=1))
    await alice.request("POST", f"/v1/workflows/{aborted['workflow']['workflow_id']}/actions/abort")
    bobs = await create(bob, workflow_body(n_tasks=1, locations=("remote",)))
    return Scene(
        srv,
        alice,
        bob,
        admin,
        running["workflow"]["workflow_id"],
        aborted["workflow"]["workflow_id"],
        bobs["workflow"]["workflow_id"],
    )


@pytest.fixture
async def scene() -> AsyncIterator[Scene]:
    env = {"EWMS_LOOP_INTERVAL_S": "0.2", "EWMS_PROGRESS_SAMPLE_S": "0", "EWMS_PROGRESS_CACHE_S": "0"}
    async with running_server(cluster_locations=LOCATIONS, env=env) as srv:
        yield await _scene(srv)


async def _texts(tab: Tab, selector: str) -> list[str]:
    return [t.strip() for t in await tab.page.locator(selector).all_inner_texts()]


def _shown(n: int | float | None) -> str:
    return "\N{EN DASH}" if n is None else str(n)  # what the page shows for "unknown"


async def _check_workflow_rows(tab: Tab, api: RestClient) -> set[str]:
    """Every row shows the state and totals the API answers; returns the workflow ids shown."""
    rows = tab.page.locator('[data-test="wf-row"]')
    shown = set()
    for i in range(await rows.count()):
        row = rows.nth(i)
        wid = await row.get_attribute("data-workflow-id")
        assert wid is not None
        shown.add(wid)
        wf = await api.request("GET", f"/v1/workflows/{wid}")
        totals = (await api.request("GET", f"/v1/workflows/{wid}/progress"))["totals"]
        cells = {
            k: (await row.locator(f'[data-test="{k}"]').inner_text()).strip()
            for k in ("state", "succeeded", "failed", "pending")
        }
        assert cells == {
            "state": wf["deactivated"] or "active",
            "succeeded": _shown(totals["succeeded"]),
            "failed": _shown(totals["failed"]),
            "pending": _shown(totals["pending"]),
        }, wid
    return shown


async def test_a_user_signs_in_with_a_token_and_sees_only_its_workflows(scene: Scene) -> None:
    async with browser_tab() as tab:
        await tab.sign_in(scene.srv.url, scene.srv.token(role="user", sub="alice"))
        assert await tab.page.locator("#who").inner_text() == "alice"
        shown = await _check_workflow_rows(tab, scene.alice)
        listed = await scene.alice.request("POST", "/v1/query/workflows", {"query": {}})
        assert shown == {w["workflow_id"] for w in listed["workflows"]} == {scene.running, scene.aborted}
        assert scene.bobs not in shown
        # the running workflow's figures are the reported ones, not zeros
        row = tab.page.locator(f'[data-workflow-id="{scene.running}"]')
        assert await row.locator('[data-test="succeeded"]').inner_text() == "42"
        await tab.screenshot("dashboard-workflows-alice")
        # signing out forgets the token
        await tab.page.click("#signout")
        await tab.wait_ready("login")
        assert await tab.page.evaluate("sessionStorage.getItem('ewms_token')") is None
        assert tab.errors == []


async def test_a_bad_token_is_refused_at_sign_in(scene: Scene) -> None:
    async with browser_tab() as tab:
        tab.expected_failures.add(f"{scene.srv.url}/v1/")  # the check of the pasted token: a 401
        await tab.page.goto(f"{scene.srv.url}/dashboard/")
        await tab.wait_ready("login")
        await tab.page.fill("#token", "not-a-token")
        await tab.page.click("#token-submit")
        await tab.page.wait_for_selector('[data-test="login-error"]')
        assert "token refused" in await tab.page.locator('[data-test="login-error"]').inner_text()
        assert await tab.page.evaluate("sessionStorage.getItem('ewms_token')") is None
        assert tab.errors == []


async def test_the_workflow_page_shows_the_apis_figures(scene: Scene) -> None:
    wid = scene.running
    progress = await scene.alice.request("GET", f"/v1/workflows/{wid}/progress")
    tfs = (await scene.alice.request("POST", "/v1/query/taskforces", {"query": {"workflow_id": wid}}))[
        "taskforces"
    ]
    async with browser_tab() as tab:
        await tab.sign_in(scene.srv.url, scene.srv.token(role="user", sub="alice"))
        await tab.goto_hash(f"#/workflow/{wid}")
        page = tab.page
        totals = progress["totals"]
        for key, test_id in (
            ("succeeded", "succeeded"),
            ("failed", "failed"),
            ("dead_lettered", "dead-lettered"),
        ):
            shown = await page.locator(f'[data-test="workflow"] .cards [data-test="{test_id}"]').inner_text()
            assert shown == _shown(totals[key]), key
        assert totals["succeeded"] == 42 and totals["failed"] == 3
        # per task: the counts and top errors
        for task_id, figures in progress["tasks"].items():
            box = page.locator(f'[data-test="task"][data-task-id="{task_id}"]')
            assert await box.locator('[data-test="task-succeeded"]').inner_text() == str(figures["succeeded"])
            assert await box.locator('[data-test="task-failed"]').inner_text() == str(figures["failed"])
            for error, n in figures["top_errors"].items():
                assert f"{error}: {n}" in await box.locator('[data-test="top-errors"]').inner_text()
        # queues: every alias, public and internal
        assert set(
            await page.locator('[data-test="queue"]').evaluate_all("rs => rs.map(r => r.dataset.alias)")
        ) == set(progress["queues"])
        # taskforces: phase, the whole phase_change_log as a timeline, compound statuses
        for tf in tfs:
            box = page.locator(f'[data-taskforce-uuid="{tf["taskforce_uuid"]}"]')
            assert await box.locator('[data-test="phase"]').inner_text() == tf["phase"]
            phases = await box.locator('[data-test="timeline-entry"]').evaluate_all(
                "es => es.map(e => e.dataset.phase)"
            )
            assert phases == [e["target_phase"] for e in tf["phase_change_log"]]
            n_statuses = sum(len(by_pilot) for by_pilot in tf["compound_statuses"].values())
            assert await box.locator('[data-test="compound"]').count() == n_statuses
        assert {tf["phase"] for tf in tfs} == {"condor-submit", "condor-complete"}
        assert "HELD: out of memory" in await page.locator('[data-test="workflow"]').inner_text()
        # the plot: one point per history sample and series, the last at the totals
        history = progress["history"]
        assert len(history) >= 3
        points = await page.locator('[data-test="plot"] polyline[data-series="succeeded"]').get_attribute(
            "points"
        )
        assert points is not None and len(points.split()) == len(history)
        assert await page.locator('[data-test="plot"] circle').count() == 2 * len(history)
        await tab.screenshot("dashboard-workflow")
        assert tab.errors == []
        # another user's workflow: the API's 404, shown as such
        path = f"/v1/workflows/{scene.bobs}"
        tab.expected_failures |= {scene.srv.url + path, scene.srv.url + path + "/progress"}
        code, refusal = await error_of(scene.alice.request("GET", path))
        await tab.goto_hash(f"#/workflow/{scene.bobs}")
        assert code == 404 and await page.locator('[data-test="page-error"]').inner_text() == refusal["error"]
        assert tab.errors == []


async def test_admin_pages(scene: Scene) -> None:
    async with browser_tab() as tab:
        tab.expected_failures.add(f"{scene.srv.url}/v1/quarantine")  # not on this server (yet)
        await tab.sign_in(scene.srv.url, scene.srv.token(role="admin", sub="root"))
        shown = await _check_workflow_rows(tab, scene.admin)
        assert shown == {scene.running, scene.aborted, scene.bobs}  # every user's
        await tab.screenshot("dashboard-workflows-admin")

        await tab.goto_hash("#/admin/taskforces")
        tfs = await scene.admin.request(
            "POST", "/v1/query/taskforces", {"query": {}, "projection": ["schedd", "phase"]}
        )
        expected = Counter((tf["schedd"], tf["phase"]) for tf in tfs["taskforces"])
        table = tab.page.locator('[data-test="phase-table"]')
        seen: Counter[tuple[str, str]] = Counter()
        for row in await table.locator('[data-test="schedd-row"]').all():
            schedd = await row.get_attribute("data-schedd")
            for cell in await row.locator("td[data-phase]").all():
                phase = await cell.get_attribute("data-phase")
                n = int(await cell.inner_text())
                if n:
                    seen[(str(schedd), str(phase))] = n
        assert seen == expected
        columns = await table.locator("th").all_inner_texts()
        assert columns == [
            "Schedd",
            "pending-starter",
            "condor-submit",
            "condor-complete",
            "cancelled",
            "Total",
        ]
        assert {s for s, _ in seen} == {"test-schedd", "remote-schedd"}
        await tab.screenshot("dashboard-admin-taskforces")

        await tab.goto_hash("#/admin/quarantine")
        status = await _status(scene.srv, "/v1/quarantine", scene.srv.token(role="admin", sub="root"))
        if status == 404:
            assert await tab.page.locator('[data-test="not-available"]').count() == 1
        else:  # the quarantine route exists: its list is rendered
            assert (
                await tab.page.locator(
                    '[data-test="admin-quarantine"] :is(table, [data-test="empty"])'
                ).count()
                == 1
            )
        await tab.screenshot("dashboard-admin-quarantine")
        assert tab.errors == []


async def test_long_lists_come_in_chunks_of_fifty(scene: Scene) -> None:
    """Fifty rows (and fifty progress reads) at a time: 'More' shows the rest, in the API's order."""
    for _ in range(50):
        await create(scene.admin, workflow_body(n_tasks=1))  # admins have no creation quota
    listed = await scene.admin.request(
        "POST", "/v1/query/workflows", {"query": {}, "projection": ["workflow_id"]}
    )
    order = [w["workflow_id"] for w in listed["workflows"]]
    assert len(order) == 53
    async with browser_tab() as tab:
        await tab.sign_in(scene.srv.url, scene.srv.token(role="admin", sub="root"))
        rows = tab.page.locator('[data-test="wf-row"]')
        assert await rows.evaluate_all("rs => rs.map(r => r.dataset.workflowId)") == order[:50]
        await tab.page.click('[data-test="more"]')
        await tab.page.wait_for_selector('[data-test="more"]', state="detached")
        assert await rows.evaluate_all("rs => rs.map(r => r.dataset.workflowId)") == order
        assert tab.errors == []


async def _status(srv: RunningServer, path: str, token: str) -> int:
    from tornado.httpclient import AsyncHTTPClient

    r = await AsyncHTTPClient().fetch(
        srv.url + path, headers={"Authorization": f"Bearer {token}"}, raise_error=False
    )
    return int(r.code)


async def test_swagger_ui_lists_every_operation(scene: Scene) -> None:
    schema = json.loads(scene.srv.deps.schema.text)
    operations = [
        (m.upper(), p)
        for p, item in schema["paths"].items()
        for m in item
        if m in ("get", "put", "post", "delete", "patch")
    ]
    async with browser_tab() as tab:
        await tab.page.goto(f"{scene.srv.url}/v1/docs")
        await tab.page.wait_for_selector(".opblock", timeout=30_000)
        shown = await tab.page.locator(".opblock-summary").evaluate_all(
            """bs => bs.map(b => [b.querySelector('.opblock-summary-method').textContent.trim(),
                                  b.querySelector('.opblock-summary-path').getAttribute('data-path')])"""
        )
        assert sorted(map(tuple, shown)) == sorted(operations)
        await tab.screenshot("swagger-ui")
        assert tab.errors == []


async def test_sign_in_through_the_oidc_issuer_with_pkce() -> None:
    """Authorization code flow with PKCE: the browser goes to the issuer, comes back with a
    code, exchanges it (with the verifier of its challenge) and uses the token it gets."""
    with running_issuer() as issuer:
        async with running_server(env=oidc_env(issuer)) as srv:
            dana = RestClient(srv.url, token=issuer.token(), retries=0, timeout=30)
            wid = (await create(dana, workflow_body(n_tasks=1)))["workflow"]["workflow_id"]
            async with browser_tab() as tab:
                await tab.page.goto(f"{srv.url}/dashboard/")
                await tab.wait_ready("login")
                await tab.page.click("#oidc-signin")
                await tab.wait_ready("#/")
                assert await tab.page.locator("#who").inner_text() == "dana"
                ids = await tab.page.locator('[data-test="wf-row"]').evaluate_all(
                    "rs => rs.map(r => r.dataset.workflowId)"
                )
                assert ids == [wid]
                assert tab.page.url == f"{srv.url}/dashboard/#/"  # the code is gone from the address
                await tab.screenshot("dashboard-oidc-signed-in")
                assert tab.errors == []
            (exchange,) = issuer.exchanged
            assert (
                exchange["redirect_uri"] == f"{srv.url}/dashboard/" and len(exchange["code_verifier"]) >= 43
            )


async def test_queue_figures_and_retry_on_the_real_broker() -> None:
    """With RabbitMQ: the pending and dead-lettered figures the page shows are the broker's,
    as the API answers them (4 messages waiting, 3 dead-lettered); its retry button requeues 3."""
    env = {
        "EWMS_LOOP_INTERVAL_S": "0.5",
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
        "EWMS_BROKER_REVOKE_MAX_WAIT_S": "0",
    }
    broker_env = {"EWMS_BROKER_URL": BROKER_URL, "EWMS_BROKER_TASK_DELIVERY_LIMIT": "1"}
    async with running_server(
        cluster_locations={"local": "dashboard-schedd"}, broker_env=broker_env, env=env
    ) as srv:
        alice = RestClient(srv.url, token=srv.token(role="user", sub="alice"), retries=0, timeout=30)
        wid = (await alice.request("POST", "/v1/workflows", broker_workflow()))["workflow"]["workflow_id"]
        try:
            await asyncio.to_thread(push_and_fail, await activated_profile(alice, wid, "in"), 4, 3)

            async def settled() -> dict[str, Any] | None:
                p = await alice.request("GET", f"/v1/workflows/{wid}/progress")
                return p if (p["totals"]["pending"], p["totals"]["dead_lettered"]) == (4, 3) else None

            progress = await wait_until(settled, timeout=40, interval=0.3)
            async with browser_tab() as tab:
                await tab.sign_in(srv.url, srv.token(role="user", sub="alice"))
                row = tab.page.locator(f'[data-workflow-id="{wid}"]')
                assert await row.locator('[data-test="pending"]').inner_text() == "4"
                assert await row.locator('[data-test="dead-lettered"]').inner_text() == "3"
                await tab.goto_hash(f"#/workflow/{wid}")
                for alias, q in progress["queues"].items():
                    shown = tab.page.locator(f'[data-test="queue"][data-alias="{alias}"]')
                    assert await shown.locator('[data-test="q-pending"]').inner_text() == str(q["pending"])
                    assert await shown.locator('[data-test="q-dead-lettered"]').inner_text() == str(
                        q["dead_lettered"]
                    )
                assert await tab.page.locator('[data-test="broker-error"]').count() == 0
                await tab.screenshot("dashboard-workflow-broker")
                # the retry button: the API moves the 3 dead letters back, the page says so
                await tab.page.click('[data-test="retry"]')
                flash = await tab.page.wait_for_selector('[data-test="flash"]')
                assert flash is not None and await flash.inner_text() == "requeued 3 dead letters"

                async def requeued() -> dict[str, Any] | None:
                    p = await alice.request("GET", f"/v1/workflows/{wid}/progress")
                    return p if (p["totals"]["pending"], p["totals"]["dead_lettered"]) == (7, 0) else None

                await wait_until(requeued, timeout=40, interval=0.3)
                renders = await tab.page.locator("main").get_attribute("data-renders")
                await tab.page.click('[data-test="refresh"]')
                # a function, not an expression: Playwright evals expressions, which the CSP refuses
                await tab.page.wait_for_function(
                    "n => Number(document.querySelector('main').dataset.renders) > n", arg=int(renders or 0)
                )
                assert await tab.page.locator('.cards [data-test="pending"]').inner_text() == "7"
                assert await tab.page.locator('.cards [data-test="dead-lettered"]').inner_text() == "0"
                assert await tab.page.locator('[data-test="retry"]').count() == 0  # nothing left to retry
                assert tab.errors == []
        finally:
            await asyncio.to_thread(cleanup, wid)
