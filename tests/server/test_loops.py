"""Background loops: crash points repaired, deactivation never undone, exceptions survived."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rest_tools.client import RestClient

from ewms_server.broker.base import BrokerUnavailable, QueueAccess
from ewms_server.caller import Caller
from ewms_server.loops.base import LoopState, run_loop
from ewms_server.loops.mq_activation import MQActivation
from ewms_server.ops.workflows import create_workflow
from ewms_server.storage.base import Change
from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, wait_until, workflow_body
from tests.server.helpers import loop_passes, phase_of, submit, take_starter, wait_phase


async def test_interrupted_create_leaves_orphans_that_are_removed(backend: str | None) -> None:
    async with running_server(
        cluster_locations=LOCATIONS,
        mongodb_url=backend,
        env={"EWMS_ORPHAN_AGE_S": "1", "EWMS_LOOP_INTERVAL_S": "0.2"},
    ) as srv:
        store = srv.deps.store

        class CrashBeforeTheWorkflow:
            """The store as a create sees it when the process dies before the workflow
            document is written (MongoDB's crash order: everything else is already there)."""

            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            async def insert_bundle(self, bundle: Any) -> None:
                await store.insert_bundle([(c, docs) for c, docs in bundle if c != "workflows"])

        made = await create_workflow(
            CrashBeforeTheWorkflow(),  # type: ignore[arg-type]
            srv.deps.cfg.cluster_locations,
            Caller("alice", "user"),
            workflow_body(),
        )
        wid = made["workflow"]["workflow_id"]
        assert await store.count("taskforces", {"workflow_id": wid}) == len(made["taskforces"]) > 0

        async def gone() -> bool:
            counts = [
                await store.count(n, {"workflow_id": wid})
                for n in ("taskforces", "task_directives", "mqprofiles")
            ]
            return counts == [0, 0, 0]

        srv.deps.wake("launch_control")
        await wait_until(gone, timeout=10)


async def test_interrupted_deactivation_is_finished(
    server: RunningServer, user: RestClient, tms: RestClient
) -> None:
    made = await user.request("POST", "/v1/workflows", workflow_body())
    uuid = made["taskforces"][0]["taskforce_uuid"]
    await take_starter(tms)
    store = server.deps.store
    # the crash: the workflow was marked, its taskforces were not reached
    await store.transition(
        "workflows",
        {"workflow_id": made["workflow"]["workflow_id"]},
        Change(set={"deactivated": "ABORTED", "deactivated_ts": 1.0}),
    )
    server.deps.wake("launch_control")
    await wait_phase(user, uuid, "cancelled")
    last = (await user.request("GET", f"/v1/taskforces/{uuid}"))["phase_change_log"][-1]
    assert last["target_phase"] == "cancelled" and last["was_successful"] is True
    assert last["source_entity"] == "server:launch-control"


class FlakyBroker:
    """A broker that is down for the first `down` activations (a thin stand-in for the
    adapter seam; the RabbitMQ adapter has its own tests on the real broker)."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        self.calls += 1
        if self.calls <= self.down:
            raise BrokerUnavailable("connection refused")
        return {m: QueueAccess(m, f"tok-{m}", "rabbitmq", "amqp://127.0.0.1") for m in mqids}

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None: ...

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None: ...

    async def health(self) -> str | None:
        return None

    async def close(self) -> None: ...


async def test_broker_down_keeps_workflow_visible_then_activates(backend: str | None) -> None:
    broker = FlakyBroker(down=2)
    async with running_server(cluster_locations=LOCATIONS, mongodb_url=backend, broker=broker) as srv:
        user = RestClient(srv.url, token=srv.token(), retries=0)
        made = await user.request("POST", "/v1/workflows", workflow_body())
        uuid = made["taskforces"][0]["taskforce_uuid"]
        await wait_until(lambda: asyncio.sleep(0, broker.calls >= 1))
        assert await phase_of(user, uuid) == "pre-mq-activation"
        await wait_phase(user, uuid, "pending-starter", timeout=15)  # backoff 2 s, then 4 s
        profiles = await user.request(
            "GET", f"/v1/workflows/{made['workflow']['workflow_id']}/mq-profiles/public"
        )
        assert {p["auth_token"] for p in profiles["mqprofiles"]} == {
            f"tok-{p['mqid']}" for p in profiles["mqprofiles"]
        }


class SlowBroker(FlakyBroker):
    """Activations wait for `release`; each makes a new password, as RabbitMQ's does."""

    def __init__(self) -> None:
        super().__init__(down=0)
        self.release = asyncio.Event()

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        self.calls += 1
        n = self.calls
        await self.release.wait()
        return {m: QueueAccess(m, f"tok-{n}", "rabbitmq", "amqp://127.0.0.1") for m in mqids}


async def test_a_second_server_never_activates_a_workflow_being_activated(backend: str | None) -> None:
    """Two activations would leave the store holding one password and the broker another."""
    broker = SlowBroker()
    env = {"EWMS_LOOP_INTERVAL_S": "30"}
    async with running_server(
        cluster_locations=LOCATIONS, mongodb_url=backend, broker=broker, env=env
    ) as srv:
        user = RestClient(srv.url, token=srv.token(), retries=0)
        made = await user.request("POST", "/v1/workflows", workflow_body())
        wid, uuid = made["workflow"]["workflow_id"], made["taskforces"][0]["taskforce_uuid"]
        await wait_until(lambda: asyncio.sleep(0, broker.calls == 1))  # this server's loop is at it
        other = MQActivation(srv.deps.store, broker, lambda: None, lambda: None, delete_grace_s=86400)
        await asyncio.wait_for(other.one_pass(), 10)  # another replica's pass on the same store
        assert broker.calls == 1
        broker.release.set()
        await wait_phase(user, uuid, "pending-starter")
        # a taskforce waiting again later (an add-workers racing the activation): released,
        # and the queues keep the password users and pilots already hold
        await srv.deps.store.update_where(
            "taskforces", {"workflow_id": wid}, Change(set={"phase": "pre-mq-activation"})
        )
        await asyncio.wait_for(other.one_pass(), 10)
        assert broker.calls == 1 and await phase_of(user, uuid) == "pre-launch"
        profiles = await user.request("GET", f"/v1/workflows/{wid}/mq-profiles/public")
        assert {p["auth_token"] for p in profiles["mqprofiles"]} == {"tok-1"}


async def test_abort_while_broker_down_is_not_undone(backend: str | None) -> None:
    """The original's activator overwrote a deactivation back to pre-launch."""
    broker = FlakyBroker(down=1)
    async with running_server(cluster_locations=LOCATIONS, mongodb_url=backend, broker=broker) as srv:
        user = RestClient(srv.url, token=srv.token(), retries=0)
        made = await user.request("POST", "/v1/workflows", workflow_body())
        uuid = made["taskforces"][0]["taskforce_uuid"]
        await wait_until(lambda: asyncio.sleep(0, broker.calls >= 1))
        failed_at = time.time()
        await user.request("POST", f"/v1/workflows/{made['workflow']['workflow_id']}/actions/abort")
        # the failed activation is retried 2 s later (the loop wakes itself): wait for that pass
        await wait_until(lambda: (srv.deps.loops["mq_activation"].last_pass_ts or 0) > failed_at + 1.5, 10)
        assert await phase_of(user, uuid) == "cancelled"


async def test_loop_survives_exceptions_and_reports_health() -> None:
    state = LoopState("t", interval_s=0.05)
    stop = asyncio.Event()
    calls = 0

    async def one_pass() -> bool:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("boom")
        return False

    task = asyncio.create_task(run_loop(state, one_pass, stop))
    await wait_until(lambda: asyncio.sleep(0, state.last_error is not None))
    assert not state.healthy() and "boom" in (state.last_error or "")
    await wait_until(lambda: asyncio.sleep(0, calls >= 3), timeout=5)
    await wait_until(lambda: asyncio.sleep(0, state.last_error is None))
    assert state.healthy()
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_wake_runs_a_pass_at_once() -> None:
    state = LoopState("t", interval_s=60)
    stop = asyncio.Event()
    passes = 0

    async def one_pass() -> bool:
        nonlocal passes
        passes += 1
        return False

    task = asyncio.create_task(run_loop(state, one_pass, stop))
    await wait_until(lambda: asyncio.sleep(0, passes == 1))
    state.wake.set()
    await wait_until(lambda: asyncio.sleep(0, passes == 2), timeout=1)
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_health_endpoint_reports_every_part(server: RunningServer) -> None:
    import json

    from tornado.httpclient import AsyncHTTPClient

    await wait_until(
        lambda: all(s.last_pass_ts for s in server.deps.loops.values()), what="a pass of each loop"
    )
    resp = await AsyncHTTPClient().fetch(server.url + "/v1/health")
    body = json.loads(resp.body)
    assert resp.code == 200 and body["healthy"] is True
    assert body["database"] == {"healthy": True}
    assert body["broker"] == {"healthy": True, "configured": False}  # no EWMS_BROKER_URL here
    assert set(body["loops"]) == {"mq_activation", "launch_control", "autoscale", "jobs"}
    for loop in body["loops"].values():
        assert loop["healthy"] is True and loop["last_error"] is None and loop["last_pass_ts"] > 0


class RecordingBroker(FlakyBroker):
    def __init__(self) -> None:
        super().__init__(down=0)
        self.revoked: list[str] = []
        self.deleted: list[str] = []

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        self.revoked.append(workflow_id)

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        self.deleted.append(workflow_id)


async def end_submitted_workflow(srv: RunningServer, action: str) -> tuple[str, str, RestClient]:
    """A workflow whose taskforce reached HTCondor, then ended by `action`; returns
    (workflow id, taskforce uuid, a TMS client)."""
    user = RestClient(srv.url, token=srv.token(), retries=0)
    tms = RestClient(srv.url, token=srv.token(role="system-tms", sub="tms"), retries=0)
    made = await user.request("POST", "/v1/workflows", workflow_body())
    wid, uuid = made["workflow"]["workflow_id"], made["taskforces"][0]["taskforce_uuid"]
    await take_starter(tms)
    await submit(tms, uuid)
    await user.request("POST", f"/v1/workflows/{wid}/actions/{action}")
    return wid, uuid, tms


async def test_credentials_revoked_once_pilots_are_gone(backend: str | None) -> None:
    """Revoking while the TMS still removes the pilots would end each in FatalError."""
    broker = RecordingBroker()
    env = {"EWMS_LOOP_INTERVAL_S": "0.2", "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0"}
    async with running_server(
        cluster_locations=LOCATIONS, mongodb_url=backend, broker=broker, env=env
    ) as srv:
        wid, uuid, tms = await end_submitted_workflow(srv, "finished")
        await loop_passes(srv.deps, 3)
        assert broker.revoked == [] and broker.deleted == []
        await tms.request("POST", f"/v1/tms/condor-rm/taskforces/{uuid}")
        await tms.request("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {"condor_complete_ts": 1.0})
        await wait_until(lambda: asyncio.sleep(0, broker.deleted == [wid]), timeout=5)
        assert broker.revoked == [wid]
        profiles = await srv.deps.store.find("mqprofiles", {"workflow_id": wid})
        assert profiles and not any(p["is_activated"] for p in profiles)


async def test_credentials_revoked_at_the_latest_after_max_wait(backend: str | None) -> None:
    broker = RecordingBroker()
    env = {"EWMS_LOOP_INTERVAL_S": "0.2", "EWMS_BROKER_REVOKE_MAX_WAIT_S": "0.5"}
    async with running_server(
        cluster_locations=LOCATIONS, mongodb_url=backend, broker=broker, env=env
    ) as srv:
        wid, _, _ = await end_submitted_workflow(srv, "abort")
        # the TMS never removes the cluster: the credentials are revoked anyway
        await wait_until(lambda: asyncio.sleep(0, broker.revoked == [wid]), timeout=5)
        assert broker.deleted == []  # the default 24 h grace before deleting queues
