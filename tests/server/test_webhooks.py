"""Webhooks through the server: notify_url checks at submit, one signed delivery per event
despite failing receivers, order per workflow, give-ups, and what the logs never show."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rest_tools.client import RestClient

from ewms_server.storage.base import Change
from ewms_server.testing import RunningServer, running_server
from ewms_server.webhooks.settings import HostRule, WebhookSettings
from tests.conftest import wait_until, workflow_body
from tests.server.helpers import create, error_of, submit, take_starter
from tests.server.webhook_receiver import Receiver, fail_first, signed_by

SECRET = "webhook-test-secret-0123456789"
ALLOWED = "127.0.0.1,hooks.example.org,*.example.net:8443"


@pytest.fixture
def server_env() -> dict[str, str]:
    return {
        "EWMS_WEBHOOK_ALLOWED_HOSTS": ALLOWED,
        "EWMS_WEBHOOK_SECRET": SECRET,
        "EWMS_WEBHOOK_RETRY_BASE_S": "0.05",
        "EWMS_WEBHOOK_RETRY_MAX_S": "0.2",
        "EWMS_WEBHOOK_TIMEOUT_S": "5",
        "EWMS_WEBHOOK_MAX_ATTEMPTS": "3",
        "EWMS_MAX_SUBMIT_ATTEMPTS": "2",
        "EWMS_SUBMIT_RETRY_DELAY_S": "0",
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


async def outbox(server: RunningServer, **flt: Any) -> list[dict[str, Any]]:
    return list(await server.deps.store.find("webhook_outbox", flt, sort=[("created_ts", 1)]))


async def report(tms: RestClient, uuid: str, statuses: dict[str, dict[str, int]]) -> None:
    body = {"compound_statuses_by_taskforce": {uuid: statuses}, "top_task_errors_by_taskforce": {}}
    await tms.request("POST", "/v1/tms/statuses/taskforces", body)


async def test_503_twice_still_one_signed_delivery_per_event_in_order(
    server: RunningServer,
    user: RestClient,
    tms: RestClient,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.plan = fail_first(2)
    created = await create(user, workflow_body(notify_url=receiver.url()))
    wid, uuid = created["workflow"]["workflow_id"], created["taskforces"][0]["taskforce_uuid"]
    assert created["workflow"]["notify_url"] == receiver.url()
    await take_starter(tms)
    await submit(tms, uuid)
    for _ in range(2):  # a TMS reports every few seconds: the second report is no news
        await report(tms, uuid, {"RUNNING": {"Tasking": 2}})
    held = {"RUNNING": {"Tasking": 1}, "HELD: memory usage exceeded request_memory": {"Tasking": 1}}
    await report(tms, uuid, held)
    await report(tms, uuid, held)
    for _ in range(2):
        await user.request("POST", f"/v1/workflows/{wid}/actions/abort")
    want = ["queues-activated", "first-worker-running", "taskforce-held", "workflow-aborted"]
    assert [r["event"] for r in await outbox(server)] == want  # one row per event, however repeated

    async def all_delivered() -> bool:
        return len(receiver.delivered()) == len(want)

    await wait_until(all_delivered, timeout=30)
    assert receiver.events() == want  # in order, though each event failed twice first
    by_id: dict[str, list[Any]] = {}
    for hit in receiver.hits:
        by_id.setdefault(hit.delivery_id, []).append(hit)
    assert len(by_id) == len(want)
    for did, hits in by_id.items():
        assert [h.status for h in hits] == [503, 503, 200], did
        assert len({h.body for h in hits}) == 1  # the same bytes on every attempt
        assert all(signed_by(SECRET, h) for h in hits)
        assert not signed_by("another-secret-0123456789", hits[0])
        body = json.loads(hits[0].body)
        assert body["delivery_id"] == did and body["event"] == hits[0].event and body["workflow_id"] == wid
        assert isinstance(body["ts"], float)
        assert (hits[0].path, hits[0].query) == ("/hook", "key=receiver-credential")
    details = {json.loads(h.body)["event"]: json.loads(h.body) for h in receiver.delivered()}
    assert details["taskforce-held"]["held"] == {"HELD: memory usage exceeded request_memory": 1}
    assert details["first-worker-running"]["taskforce_uuid"] == uuid
    assert details["workflow-aborted"]["deactivated"] == "ABORTED"

    async def recorded() -> list[dict[str, Any]]:  # the outcome is written after the answer came
        rows = await outbox(server)
        return rows if all(r["status"] == "delivered" for r in rows) else []

    rows = await wait_until(recorded, timeout=10)
    assert all((r["attempts"], r["last_status"], r["last_error"]) == (3, 200, None) for r in rows)
    # the logs name the host, never the secret, the URL's query or a body
    text = caplog.text
    assert "127.0.0.1:" in text and "delivered" in text
    assert SECRET not in text and "receiver-credential" not in text and '"delivery_id"' not in text


async def test_an_end_cut_off_before_its_event_is_sent_by_the_repair_sweep(
    server: RunningServer, user: RestClient, receiver: Receiver
) -> None:
    wid = (await create(user, workflow_body(notify_url=receiver.url())))["workflow"]["workflow_id"]
    # a server killed right after marking the workflow ended: no event, taskforces not stopped
    change = Change(set={"deactivated": "FINISHED", "deactivated_ts": time.time()})
    assert await server.deps.store.transition("workflows", {"workflow_id": wid}, change)

    async def sent() -> bool:
        return "workflow-finished" in receiver.events()

    await wait_until(sent, timeout=15)
    wf = await server.deps.store.get("workflows", {"workflow_id": wid})
    assert wf is not None and wf["taskforces_stopped"] is True
    assert [r["event"] for r in await outbox(server)].count("workflow-finished") == 1


async def test_submit_failed_taskforce_is_an_event(
    server: RunningServer, user: RestClient, tms: RestClient, receiver: Receiver
) -> None:
    created = await create(user, workflow_body(notify_url=receiver.url()))
    uuid = created["taskforces"][0]["taskforce_uuid"]
    for _ in range(2):  # EWMS_MAX_SUBMIT_ATTEMPTS
        await take_starter(tms)
        await tms.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed", {"error": "no schedd"})

    async def delivered() -> bool:
        return receiver.events() == ["queues-activated", "taskforce-submit-failed"]

    await wait_until(delivered, timeout=15)
    body = json.loads(receiver.delivered()[-1].body)
    assert (body["taskforce_uuid"], body["n_failed_submits"], body["error"]) == (uuid, 2, "no schedd")


async def test_4xx_and_redirects_give_up_at_once(
    server: RunningServer, user: RestClient, receiver: Receiver
) -> None:
    for answer in (404, 302):
        receiver.plan = lambda _did, _n, answer=answer: answer  # type: ignore[misc]
        wid = (await create(user, workflow_body(notify_url=receiver.url())))["workflow"]["workflow_id"]

        async def given_up(wid: str = wid) -> list[dict[str, Any]]:
            return [r for r in await outbox(server, workflow_id=wid) if r["status"] == "failed"]

        [row] = await wait_until(given_up, timeout=15)
        assert (row["attempts"], row["last_status"]) == (1, answer)
        assert str(answer) in row["last_error"]
    assert Counter(h.status for h in receiver.hits) == {404: 1, 302: 1}
    assert all(h.path == "/hook" for h in receiver.hits)  # the redirect was not followed


async def test_a_receiver_that_keeps_failing_is_given_up_after_max_attempts(
    server: RunningServer, user: RestClient, receiver: Receiver
) -> None:
    receiver.plan = lambda _did, _n: 500
    await create(user, workflow_body(notify_url=receiver.url()))

    async def given_up() -> list[dict[str, Any]]:
        return await outbox(server, status="failed")

    [row] = await wait_until(given_up, timeout=15)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (3, 500, "HTTP 500")
    assert [h.status for h in receiver.hits] == [500, 500, 500]  # EWMS_WEBHOOK_MAX_ATTEMPTS


async def test_the_allow_list_is_checked_again_before_each_attempt(receiver: Receiver) -> None:
    receiver.plan = lambda _did, _n: 503
    env = {"EWMS_WEBHOOK_SECRET": SECRET, "EWMS_WEBHOOK_RETRY_BASE_S": "0.05", "EWMS_LOOP_INTERVAL_S": "0.2"}
    env["EWMS_WEBHOOK_TIMEOUT_S"] = "1"  # a lease a stop could leave behind runs out soon
    with tempfile.TemporaryDirectory(prefix="ewms-") as data:
        async with running_server(
            env={**env, "EWMS_DATA_DIR": data, "EWMS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
        ) as a:
            user = RestClient(a.url, token=a.token(), retries=0, timeout=30)
            await create(user, workflow_body(notify_url=receiver.url()))
            user.close()

            async def tried() -> bool:
                return bool(receiver.hits)

            await wait_until(tried, timeout=15)
        n_hits = len(receiver.hits)
        # the operator takes the host off the list: the pending delivery is never sent again
        async with running_server(
            env={**env, "EWMS_DATA_DIR": data, "EWMS_WEBHOOK_ALLOWED_HOSTS": "hooks.example.org"}
        ) as b:

            async def given_up() -> list[dict[str, Any]]:
                return await outbox(b, status="failed")

            [row] = await wait_until(given_up, timeout=15)
            assert row["last_error"].startswith("not sent: host 127.0.0.1:") and row["attempts"] == n_hits
        assert len(receiver.hits) == n_hits


def test_backoff_doubles_up_to_the_max_and_honours_retry_after() -> None:
    from ewms_server.loops.webhooks import WebhookDelivery

    settings = WebhookSettings(retry_base_s=2, retry_max_s=30)
    delay = WebhookDelivery._delay
    fake: Any = type("D", (), {"settings": settings})()
    assert [delay(fake, n, None) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert delay(fake, 1, 10) == 10 and delay(fake, 1, 1000) == 30 and delay(fake, 3, 1) == 8


@pytest.mark.parametrize(
    "url,why",
    [
        ("http://10.0.0.1/hook", "host 10.0.0.1:80 is not in EWMS_WEBHOOK_ALLOWED_HOSTS"),
        ("https://hooks.example.org.evil.com/", "is not in EWMS_WEBHOOK_ALLOWED_HOSTS"),
        ("https://example.net:8443/", "is not in EWMS_WEBHOOK_ALLOWED_HOSTS"),  # the wildcard's apex
        ("https://a.example.net/", "host a.example.net:443 is not in"),  # the wrong port
        ("ftp://hooks.example.org/", "not an http:// or https:// URL"),
        ("http://hooks.example.org:99999/", "not a well-formed URL"),
        ("http://[::1/", "not a well-formed URL"),
        ("http:///no-host", "names no host"),
        ("https://hooks.example.org/a b", "whitespace"),
        ("https://hooks.example.org/" + "x" * 2100, "body.notify_url"),
    ],
)
async def test_a_notify_url_off_the_allow_list_is_a_400_and_stores_nothing(
    server: RunningServer, user: RestClient, url: str, why: str
) -> None:
    code, err = await error_of(create(user, workflow_body(notify_url=url)))
    assert code == 400 and why in err["error"] and "notify_url" in err["error"], err
    assert await server.deps.store.count("workflows", {}) == 0
    assert await server.deps.store.count("taskforces", {}) == 0
    assert await server.deps.store.count("webhook_outbox", {}) == 0


async def test_an_allowed_notify_url_is_shown_to_its_owner_only(
    server: RunningServer, user: RestClient, user_b: RestClient, admin: RestClient
) -> None:
    for url in ("https://hooks.example.org/x?token=t", "https://deep.a.example.net:8443/"):
        wid = (await create(user, workflow_body(notify_url=url)))["workflow"]["workflow_id"]
        assert (await user.request("GET", f"/v1/workflows/{wid}"))["notify_url"] == url
        assert (await admin.request("GET", f"/v1/workflows/{wid}"))["notify_url"] == url
        code, _ = await error_of(user_b.request("GET", f"/v1/workflows/{wid}"))
        assert code == 404
    plain = (await create(user, workflow_body()))["workflow"]
    assert plain["notify_url"] is None
    page = await user_b.request("POST", "/v1/query/workflows", {"query": {}})
    assert page["workflows"] == []


async def test_without_allowed_hosts_webhooks_are_off() -> None:
    async with running_server() as srv:
        user = RestClient(srv.url, token=srv.token(), retries=0, timeout=30)
        code, err = await error_of(create(user, workflow_body(notify_url="https://hooks.example.org/")))
        assert code == 400 and "EWMS_WEBHOOK_ALLOWED_HOSTS" in err["error"]
        assert await srv.deps.store.count("workflows", {}) == 0
        assert "webhooks" not in srv.deps.loops
        assert (await create(user, workflow_body()))["workflow"]["notify_url"] is None


def test_host_rules() -> None:
    rule = HostRule.parse("*.Example.org")
    assert rule.allows("a.example.org", 443) and rule.allows("b.a.example.org", 80)
    assert not rule.allows("example.org", 443) and not rule.allows("badexample.org", 443)
    port_rule = HostRule.parse("hooks.example.org:8443")
    assert port_rule.allows("hooks.example.org", 8443) and not port_rule.allows("hooks.example.org", 443)
    for bad in ("https://x/", "x/y", "*", "a.*.org", "host:port", "[::1"):
        with pytest.raises(ValueError, match="EWMS_WEBHOOK_ALLOWED_HOSTS"):
            HostRule.parse(bad)


def test_settings_need_a_secret_and_never_show_it() -> None:
    env = {"EWMS_WEBHOOK_ALLOWED_HOSTS": "hooks.example.org"}
    with pytest.raises(ValueError, match="EWMS_WEBHOOK_SECRET"):
        WebhookSettings.from_settings(env.get)
    short = {**env, "EWMS_WEBHOOK_SECRET": "short"}
    with pytest.raises(ValueError, match="EWMS_WEBHOOK_SECRET"):
        WebhookSettings.from_settings(short.get)
    full = {**env, "EWMS_WEBHOOK_SECRET": SECRET, "EWMS_WEBHOOK_TIMEOUT_S": "3"}
    defaults = {"EWMS_WEBHOOK_RETRY_BASE_S": "2", "EWMS_WEBHOOK_RETRY_MAX_S": "600"}
    defaults |= {
        "EWMS_WEBHOOK_MAX_ATTEMPTS": "20",
        "EWMS_WEBHOOK_MAX_AGE_S": "60",
        "EWMS_WEBHOOK_INPUT_CHECK_S": "1",
    }
    s = WebhookSettings.from_settings({**full, **defaults}.get)
    assert s.enabled and s.timeout_s == 3 and SECRET not in repr(s)
