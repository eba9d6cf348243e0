"""Quarantine on the server: failures per machine from the TMS's reports, the threshold, the
window and the cool-down, whole locations paused, and the routes (on SQLite and motor)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from rest_tools.client import RestClient

from ewms_server.config import Config, ConfigError
from ewms_server.ops import quarantine as ops
from ewms_server.quarantine_rules import QuarantinePolicy
from ewms_server.storage.base import Change
from ewms_server.testing import RunningServer
from tests.conftest import SCHEDD, wait_until, workflow_body

FAILED = {"tasks_failed": 1, "fatal": 0, "held": 0, "succeeded": 0}


def counts(failed: int = 0, succeeded: int = 0, fatal: int = 0, held: int = 0) -> dict[str, int]:
    return {"tasks_failed": failed, "fatal": fatal, "held": held, "succeeded": succeeded}


# --- the rules ----------------------------------------------------------------------------------


def test_the_black_hole_pattern_is_caught_and_busy_good_machines_are_not() -> None:
    p = QuarantinePolicy()
    assert not p.verdict(4, 0)
    assert p.verdict(5, 0)  # a handful of failures, nothing else
    assert not p.verdict(5, 100)  # a good machine running some bad tasks
    assert p.verdict(90, 10) and not p.verdict(89, 11)  # the failure ratio (0.9)
    assert not QuarantinePolicy(threshold=0).verdict(10**6, 0)  # 0: never automatically


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EWMS_QUARANTINE_WINDOW_S", "soon"),
        ("EWMS_QUARANTINE_THRESHOLD", "-1"),
        ("EWMS_QUARANTINE_FAILURE_RATIO", "1.5"),
        ("EWMS_QUARANTINE_COOLDOWN_S", "0"),
    ],
)
def test_a_bad_quarantine_setting_is_a_config_error_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({"EWMS_AUTH_SECRET": "x" * 40, name: value})


# --- counting, with the store ---------------------------------------------------------------------


async def _taskforces(
    user: RestClient, n_tasks: int = 1, locations: tuple[str, ...] = ("local",)
) -> list[str]:
    created = await user.request("POST", "/v1/workflows", workflow_body(n_tasks=n_tasks, locations=locations))
    return [tf["taskforce_uuid"] for tf in created["taskforces"]]


async def _report(tms: RestClient, report: dict[str, Any]) -> Any:
    return await tms.request("POST", "/v1/tms/statuses/taskforces", {"machine_failures_by_taskforce": report})


async def test_a_machine_failing_every_task_is_quarantined_within_a_handful(
    server: RunningServer, user: RestClient, user_b: RestClient, tms: RestClient, admin: RestClient
) -> None:
    (uuid,) = await _taskforces(user)
    # cumulative counts: the same report twice counts once
    for _ in range(2):
        await _report(tms, {uuid: {"bad": counts(failed=3), "good": counts(failed=1, succeeded=40)}})
    assert (await admin.request("GET", "/v1/quarantine"))["machines"] == []
    await _report(tms, {uuid: {"bad": counts(failed=4, fatal=1), "good": counts(failed=2, succeeded=80)}})
    (entry,) = (await admin.request("GET", "/v1/quarantine"))["machines"]
    assert (entry["machine"], entry["location"], entry["source"]) == ("bad", "local", "auto")
    assert entry["reason"].startswith("5 failures") and entry["until"] == pytest.approx(entry["since"] + 3600)
    # who sees it: the owner of a taskforce that ran there, the TMS of its schedd; not bob
    assert [e["machine"] for e in (await user.request("GET", "/v1/quarantine"))["machines"]] == ["bad"]
    assert (await user_b.request("GET", "/v1/quarantine"))["machines"] == []
    got = await tms.request("GET", "/v1/tms/quarantine", {"schedd": SCHEDD})
    assert [e["machine"] for e in got["machines"]] == ["bad"]
    other = await tms.request("GET", "/v1/tms/quarantine", {"schedd": "remote-schedd"})
    assert other == {"machines": []}
    # more failures do not make a second entry
    await _report(tms, {uuid: {"bad": counts(failed=40)}})
    assert len(await server.deps.store.find("quarantine", {})) == 1


async def test_failures_older_than_the_window_do_not_count(
    server: RunningServer, user: RestClient, tms: RestClient, admin: RestClient
) -> None:
    a, b = await _taskforces(user, n_tasks=2)
    await _report(tms, {a: {"m": counts(failed=4)}})
    # those four failures are now older than the window
    store, window = server.deps.store, server.deps.cfg.quarantine.window_s
    old = time.time() - window - 10
    await store.update_where("machine_stats", {"machine": "m"}, Change(set={"events": [[old, 4, 0]]}))
    await _report(tms, {b: {"m": counts(failed=4)}})
    assert (await admin.request("GET", "/v1/quarantine"))["machines"] == []
    await _report(tms, {b: {"m": counts(failed=5)}})  # now 5 within the window
    assert [e["machine"] for e in (await admin.request("GET", "/v1/quarantine"))["machines"]] == ["m"]


async def test_a_location_whose_machines_all_fail_is_paused_and_offered_nothing(
    server: RunningServer, user: RestClient, tms: RestClient, admin: RestClient
) -> None:
    uuids = await _taskforces(user, n_tasks=2)
    await _report(tms, {uuids[0]: {"n1": counts(failed=3)}, uuids[1]: {"n2": counts(failed=3, fatal=1)}})
    machines = {e["machine"] for e in (await admin.request("GET", "/v1/quarantine"))["machines"]}
    assert machines == {"*"}  # neither machine past the threshold alone; together, all failing
    assert (await user.request("GET", "/v1/quarantine"))["machines"][0]["machine"] == "*"
    # the paused location's taskforces are not offered to its TMS
    await server.deps.store.update_where("taskforces", {}, Change(set={"lease_until": 0.0}))
    await wait_until(lambda: _phases(server, "pending-starter", 2), timeout=10)
    assert await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD}) == {}
    # lifted: offered again
    assert await admin.request("DELETE", "/v1/quarantine/*?location=local") == {
        "machine": "*",
        "location": "local",
        "lifted": 1,
    }
    got = await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD})
    assert got["taskforce"]["taskforce_uuid"] in uuids


async def _phases(server: RunningServer, phase: str, n: int) -> bool:
    return await server.deps.store.count("taskforces", {"phase": phase}) >= n


async def test_a_location_whose_submits_all_fail_is_paused(
    server: RunningServer, user: RestClient, tms: RestClient, admin: RestClient
) -> None:
    uuids = await _taskforces(user, n_tasks=2)
    await wait_until(lambda: _phases(server, "pending-starter", 2), timeout=10)
    for uuid in uuids:  # 3 failed submits each (EWMS_MAX_SUBMIT_ATTEMPTS)
        for _ in range(3):
            await server.deps.store.update_where(
                "taskforces", {"taskforce_uuid": uuid}, Change(set={"lease_until": 0.0})
            )
            await tms.request(
                "POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed", {"error": "no schedd"}
            )
    (entry,) = (await admin.request("GET", "/v1/quarantine"))["machines"]
    assert (entry["machine"], entry["location"]) == ("*", "local") and "submits" in entry["reason"]


async def test_admins_add_and_lift_entries_others_cannot(
    server: RunningServer, user: RestClient, admin: RestClient
) -> None:
    entry = await admin.request(
        "POST", "/v1/quarantine", {"machine": "n9", "location": "remote", "duration_s": 60}
    )
    assert (entry["machine"], entry["location"], entry["reason"]) == ("n9", "remote", "added by an admin")
    assert entry["until"] == pytest.approx(entry["since"] + 60)
    again = await admin.request(
        "POST", "/v1/quarantine", {"machine": "n9", "location": "remote", "reason": "disk"}
    )
    assert again["reason"] == "disk" and again["until"] == pytest.approx(again["since"] + 3600)  # extended
    for method, path, body, status in (
        ("POST", "/v1/quarantine", {"machine": "n9", "location": "mars"}, 400),
        ("POST", "/v1/quarantine", {"machine": 'a"b', "location": "local"}, 400),
        ("POST", "/v1/quarantine", {"machine": "n9"}, 400),
        ("POST", "/v1/quarantine", {"machine": "n9", "location": "local", "duration_s": -1}, 400),
        ("DELETE", "/v1/quarantine/n9?location=local", None, 404),
        ("DELETE", "/v1/quarantine/n9", None, 400),
    ):
        with pytest.raises(requests.HTTPError) as e:
            await admin.request(method, path, body)
        assert e.value.response.status_code == status, (method, path, body)
    with pytest.raises(requests.HTTPError) as e:
        await user.request("POST", "/v1/quarantine", {"machine": "n1", "location": "local"})
    assert e.value.response.status_code == 403
    assert len(await server.deps.store.find("quarantine", {})) == 1  # the refusals changed nothing
    assert (await admin.request("DELETE", "/v1/quarantine/n9?location=remote"))["lifted"] == 1
    assert (await admin.request("GET", "/v1/quarantine"))["machines"] == []


async def test_a_report_of_an_unknown_taskforce_is_refused_alone(tms: RestClient, user: RestClient) -> None:
    (uuid,) = await _taskforces(user)
    r = await _report(tms, {uuid: {"m": FAILED}, "TF-000000000000-0000-000000": {"m": FAILED}})
    assert sorted(x["status"] for x in r["results"]) == ["failed", "updated"]


async def test_expired_entries_are_not_in_force(server: RunningServer, admin: RestClient) -> None:
    store = server.deps.store
    now = time.time()
    await ops.put(
        store, machine="old", location="local", reason="r", until=now - 1, source="auto", now=now - 10
    )
    assert await ops.active(store) == []
    # an expired entry is replaced, not extended
    entry = await ops.put(
        store, machine="old", location="local", reason="new", until=now + 5, source="auto", now=now
    )
    assert entry["since"] == now and (await admin.request("GET", "/v1/quarantine"))["machines"] == [entry]
