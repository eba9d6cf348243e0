"""Every route x every kind of caller, against the real server on both backends.

The table MATRIX says, for each operation of schema/openapi.json, the status each caller gets:
no token, an expired token, a token with a wrong signature (claiming admin), user A (alice,
who owns the objects in the paths), user B (bob), the TMS of the objects' schedd, the TMS of
another schedd (tmsB: 403 on every TMS route, a 404 or nothing on taskforce reads, each
taskforce of its statuses report refused in a 207), a TMS token naming no schedds (tms0:
refused without EWMS_AUTH_ALLOW_UNSCOPED_TMS), and an admin. Each cell runs on
fresh objects when the route changes state, so every cell is independent of the others and
the allowed cells really succeed (a TMS transition is offered a taskforce in the phase it
accepts). Besides the status, every cell checks:

- a refused cell (401/403/404, and tmsB's 207) changes nothing in the database;
- no user ever receives a queue credential (`auth_token`) of another user's workflow, nor of a
  pilot-only (non-public) queue of its own;
- a state-changing request is logged naming the actual subject ("... by user:alice"), and the
  transitions it makes name it in `phase_change_log.source_entity`.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from ewms_client.jobs import MultipartBody, Part
from ewms_server.auth import mint_token
from ewms_server.broker.base import QueueAccess, QueueDepth
from ewms_server.handlers.routes import HANDLERS
from ewms_server.ops.jobs import new_runner_token
from ewms_server.schema import load_openapi_text
from ewms_server.storage.base import Change
from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, SCHEDD, wait_until, workflow_body

IDENTITIES = ("none", "expired", "badsig", "alice", "bob", "tms", "tmsB", "tms0", "admin")
ENTITY = {
    "alice": "user:alice",
    "bob": "user:bob",
    "tms": "system-tms:tms-1",
    "tmsB": "system-tms:tms-b",
    "tms0": "system-tms:tms-0",
    "admin": "admin:root",
}
SUBJECT_ROLE = {
    "alice": ("alice", "user"),
    "bob": ("bob", "user"),
    "tms": ("tms-1", "system-tms"),
    "tmsB": ("tms-b", "system-tms"),
    "tms0": ("tms-0", "system-tms"),
    "admin": ("root", "admin"),
}
OTHER_SCHEDD = "remote-schedd"
"""tmsB's only schedd; every object in the table is at SCHEDD."""
WRONG_SECRET = "not-the-server-secret-but-long-enough-0123456789"

WF = "/v1/workflows/{workflow_id}"
MQS = "/v1/mqs/workflows/{workflow_id}"  # where EWMS's clients reach its queue service
TD = "/v1/task-directives/{task_id}"
TF = "/v1/taskforces/{taskforce_uuid}"
JOB = "/v1/jobs/{job_id}"

# fmt: off
MATRIX: dict[tuple[str, str], tuple[int, int, int, int, int, int, int, int, int]] = {
    # operation                                                          none  exp  sig alice bob  tms tmsB tms0 admin
    ("GET",  "/v1/"):                                                    (401, 401, 401, 200, 200, 200, 200, 403, 200),
    ("GET",  "/v1/health"):                                              (200, 200, 200, 200, 200, 200, 200, 200, 200),
    ("GET",  "/v1/schema/openapi"):                                      (200, 200, 200, 200, 200, 200, 200, 200, 200),
    ("POST", "/v1/workflows"):                                           (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("GET",  WF):                                                        (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("POST", WF + "/actions/abort"):                                     (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("POST", WF + "/actions/finished"):                                  (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("GET",  WF + "/mq-profiles/public"):                                (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("GET",  MQS + "/mq-profiles/public"):                               (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("POST", "/v1/query/workflows"):                                     (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("GET",  TD):                                                        (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("POST", TD + "/actions/add-workers"):                               (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("POST", "/v1/query/task-directives"):                               (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("GET",  TF):                                                        (401, 401, 401, 200, 404, 200, 404, 403, 200),
    ("POST", "/v1/query/taskforces"):                                    (401, 401, 401, 200, 200, 200, 200, 403, 200),
    ("GET",  "/v1/tms/pending-starter/taskforces"):                      (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("GET",  "/v1/tms/pending-stopper/taskforces"):                      (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("POST", "/v1/tms/condor-submit/taskforces/{taskforce_uuid}"):        (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("POST", "/v1/tms/condor-submit/taskforces/{taskforce_uuid}/failed"): (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("POST", "/v1/tms/condor-rm/taskforces/{taskforce_uuid}"):            (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("POST", "/v1/tms/condor-rm/taskforces/{taskforce_uuid}/failed"):     (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("POST", "/v1/tms/condor-complete/taskforces/{taskforce_uuid}"):      (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("POST", "/v1/tms/statuses/taskforces"):                             (401, 401, 401, 403, 403, 200, 207, 403, 200),
    ("GET",  WF + "/progress"):                                          (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("POST", WF + "/actions/retry-dead-letters"):                        (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("GET",  "/metrics"):                                                (401, 401, 401, 403, 403, 403, 403, 403, 200),
    ("GET",  "/v1/secrets"):                                             (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("PUT",  "/v1/secrets/{key}"):                                       (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("DELETE", "/v1/secrets/{key}"):                                     (401, 401, 401, 200, 404, 403, 403, 403, 404),
    # a pilot's secrets fetch token only (tests/server/test_secrets.py): no JWT opens it
    ("GET",  "/v1/pilot/secrets"):                                       (401, 401, 401, 401, 401, 401, 401, 401, 401),
    ("GET",  "/v1/docs"):                                                (200, 200, 200, 200, 200, 200, 200, 200, 200),
    ("GET",  "/v1/docs/{asset}"):                                        (200, 200, 200, 200, 200, 200, 200, 200, 200),
    ("GET",  "/v1/dashboard/config"):                                    (200, 200, 200, 200, 200, 200, 200, 200, 200),
    ("GET",  "/dashboard/{path}"):                                       (200, 200, 200, 200, 200, 200, 200, 200, 200),
    ("GET",  "/v1/tms/quarantine"):                                      (401, 401, 401, 403, 403, 200, 403, 403, 200),
    ("GET",  "/v1/quarantine"):                                          (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("POST", "/v1/quarantine"):                                          (401, 401, 401, 403, 403, 403, 403, 403, 200),
    ("DELETE", "/v1/quarantine/{machine}"):                              (401, 401, 401, 403, 403, 403, 403, 403, 200),
    ("GET",  "/v1/jobs"):                                                (401, 401, 401, 200, 200, 403, 403, 403, 200),
    ("POST", "/v1/jobs"):                                                (401, 401, 401, 201, 201, 403, 403, 403, 201),
    ("GET",  JOB):                                                       (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("DELETE", JOB):                                                     (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("GET",  JOB + "/files"):                                            (401, 401, 401, 200, 404, 403, 403, 403, 200),
    ("GET",  JOB + "/files/{path}"):                                     (401, 401, 401, 200, 404, 403, 403, 403, 200),
    # only the job's runner token opens these (tests/server/test_jobs_api.py): no caller here
    ("GET",  JOB + "/runner/inputs"):                                    (401, 401, 401, 401, 401, 401, 401, 401, 401),
    ("GET",  JOB + "/runner/inputs/{path}"):                             (401, 401, 401, 401, 401, 401, 401, 401, 401),
    ("PUT",  JOB + "/runner/outputs/{path}"):                            (401, 401, 401, 401, 401, 401, 401, 401, 401),
    ("POST", JOB + "/runner/status"):                                    (401, 401, 401, 401, 401, 401, 401, 401, 401),
}
# fmt: on

SUBMIT_BODY = {
    "cluster_id": 4242,
    "n_workers": 2,
    "submit_dict": {"executable": "/bin/true"},
    "job_event_log_fpath": "/var/log/ewms/tf.log",
}
SECRET_RE = re.compile(r"mq-secret-Q-[0-9a-f-]+")
USER_SECRET = "matrix-user-secret-value-0123456789"
"""The value of every user secret the table sets: no answer may ever carry it."""


class TokenBroker:
    """A broker adapter that issues a distinct, recognisable credential per queue."""

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        return {m: QueueAccess(m, f"mq-secret-{m}", "rabbitmq", "amqp://broker.test") for m in mqids}

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        return None

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        return None

    async def queue_depths(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueDepth]:
        return {m: QueueDepth(pending=5, in_flight=1, dead_lettered=2) for m in mqids}

    async def requeue_dead_letters(self, workflow_id: str, mqids: list[str], limit: int) -> int:
        return 2 * len(mqids)

    async def publish(self, workflow_id: str, mqid: str, payload: bytes) -> None:
        return None

    async def health(self) -> str | None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
async def server(backend: str | None) -> AsyncIterator[RunningServer]:
    """The conftest server, with a broker that hands out queue credentials (to look for leaks)."""
    async with running_server(
        cluster_locations=LOCATIONS,
        mongodb_url=backend,
        broker=TokenBroker(),
        env={"EWMS_LOOP_INTERVAL_S": "1"},
    ) as srv:
        yield srv


# -- the harness -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    text: str
    headers: Any

    @property
    def json(self) -> Any:
        """The JSON body; the text itself when the answer is not JSON (GET /metrics)."""
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self.text
        return json.loads(self.text) if self.text else None


@dataclass
class Req:
    path: str
    body: dict[str, Any] | None = None
    query: dict[str, str] | None = None
    ids: dict[str, Any] = field(default_factory=dict)
    """The objects the request is about, for the per-cell checks."""
    raw: bytes | None = None
    """A body that is not JSON (a multipart upload), sent with `content_type`."""
    content_type: str = "application/json"


class Ctx:
    def __init__(self, srv: RunningServer) -> None:
        self.srv = srv
        self.http = AsyncHTTPClient()
        self.store = srv.deps.store
        self.tokens: dict[str, str | None] = {
            "none": None,
            "expired": srv.token(role="admin", sub="alice", expires_s=-120),
            "badsig": mint_token(WRONG_SECRET, sub="alice", role="admin"),
        }
        for ident, (sub, role) in SUBJECT_ROLE.items():
            self.tokens[ident] = srv.token(role=role, sub=sub)
        self.tokens["tmsB"] = srv.token(role="system-tms", sub="tms-b", schedds=[OTHER_SCHEDD])
        self.tokens["tms0"] = mint_token(srv.secret, sub="tms-0", role="system-tms")  # no schedds claim
        self._shared: dict[str, Any] | None = None
        self.jobs: dict[str, str] = {}

    async def call(
        self,
        ident: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        *,
        token: str | None = None,
        authorization: str | None = None,
        raw_body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        headers = {"Content-Type": content_type}
        tok = token if token is not None else self.tokens.get(ident)
        if authorization is not None:
            headers["Authorization"] = authorization
        elif tok:
            headers["Authorization"] = f"Bearer {tok}"
        url = self.srv.url + path + (f"?{urlencode(query)}" if query else "")
        raw = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        raw = raw_body if raw_body is not None else raw
        r = await self.http.fetch(
            url,
            method=method,
            body=raw,
            headers=headers,
            raise_error=False,
            allow_nonstandard_methods=True,
            request_timeout=30,
        )
        return Reply(r.code, r.body.decode() if r.body else "", r.headers)

    async def ok(self, ident: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = await self.call(ident, method, path, body)
        assert r.status == 200, (method, path, r.status, r.text)
        return r.json

    # -- fixtures objects, always alice's ----------------------------------------------

    async def new_workflow(self, *, submitted: int = 0) -> dict[str, Any]:
        """A fresh 2-task workflow of alice (queues q0 -> q1 -> q2, q1 pilot-only), its
        taskforces in pending-starter; the first `submitted` of them in condor-submit."""
        created = await self.ok("alice", "POST", "/v1/workflows", workflow_body(n_tasks=2))
        uuids = [tf["taskforce_uuid"] for tf in created["taskforces"]]
        await self.wait_phases(uuids, "pending-starter")
        for uuid in uuids[:submitted]:
            await self.ok("tms", "POST", f"/v1/tms/condor-submit/taskforces/{uuid}", SUBMIT_BODY)
        return created

    async def taskforce_in(self, phase: str) -> str:
        """A fresh taskforce of alice in `phase`: pending-starter, condor-submit or pending-stopper."""
        if phase == "pending-starter":
            return (await self.new_workflow())["taskforces"][0]["taskforce_uuid"]
        created = await self.new_workflow(submitted=1)
        uuid = created["taskforces"][0]["taskforce_uuid"]
        if phase == "pending-stopper":
            wid = created["workflow"]["workflow_id"]
            await self.ok("alice", "POST", f"/v1/workflows/{wid}/actions/abort")
        tf = await self.store.get("taskforces", {"taskforce_uuid": uuid})
        assert tf["phase"] == phase
        return uuid

    async def shared(self) -> dict[str, Any]:
        """One workflow of alice for the read-only routes."""
        if self._shared is None:
            self._shared = await self.new_workflow()
        return self._shared

    async def wait_phases(self, uuids: list[str], phase: str) -> None:
        async def check() -> bool:
            docs = await self.store.find(
                "taskforces", {"taskforce_uuid": {"$in": uuids}}, projection=["phase"]
            )
            return len(docs) == len(uuids) and all(d["phase"] == phase for d in docs)

        await wait_until(check, timeout=10)

    async def settle(self) -> None:
        """Wait until the background loops have nothing left to do (so snapshots are stable)."""

        async def check() -> bool:
            moving = await self.store.find(
                "taskforces", {"phase": {"$in": ["pre-mq-activation", "pre-launch"]}}, projection=["phase"]
            )
            stopping = await self.store.find(
                "workflows",
                {"deactivated": {"$ne": None}, "taskforces_stopped": False},
                projection=["workflow_id"],
            )
            # credentials are revoked once an ended workflow has no live taskforce left
            unrevoked = await self.store.find(
                "workflows",
                {"deactivated": {"$ne": None}, "queues_revoked": False},
                projection=["workflow_id"],
            )
            for wf in unrevoked:
                live = await self.store.count(
                    "taskforces",
                    {
                        "workflow_id": wf["workflow_id"],
                        "phase": {"$nin": ["condor-complete", "submit-failed", "cancelled"]},
                    },
                )
                if not live:
                    return False
            return not moving and not stopping

        await wait_until(check, timeout=10)

    async def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for name in ("workflows", "task_directives", "taskforces", "mqprofiles", "secrets", "jobs"):
            docs = await self.store.find(name, {})
            out[name] = sorted((_plain(d) for d in docs), key=lambda d: json.dumps(d, sort_keys=True))
        return out

    async def secrets(self) -> dict[str, dict[str, Any]]:
        """Every queue credential issued so far -> its profile."""
        return {p["auth_token"]: p for p in await self.store.find("mqprofiles", {}) if p.get("auth_token")}


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    d = dict(doc)
    d.pop("_id", None)
    return json.loads(json.dumps(d, default=str))


# -- what each route needs, and what a successful call must have done --------------------

Prepare = Callable[[Ctx], Awaitable[Req]]
Check = Callable[[Ctx, str, Req, Any], Awaitable[None]]


async def _wf_shared(ctx: Ctx) -> Req:
    created = await ctx.shared()
    wid = created["workflow"]["workflow_id"]
    return Req(f"/v1/workflows/{wid}", ids={"workflow_id": wid})


def _deactivate(action: str) -> Prepare:
    async def prepare(ctx: Ctx) -> Req:
        created = await ctx.new_workflow(submitted=1)  # one taskforce in HTCondor, one not yet
        wid = created["workflow"]["workflow_id"]
        uuids = [tf["taskforce_uuid"] for tf in created["taskforces"]]
        return Req(f"/v1/workflows/{wid}/actions/{action}", ids={"workflow_id": wid, "uuids": uuids})

    return prepare


def _check_deactivated(kind: str) -> Check:
    async def check(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
        wid = req.ids["workflow_id"]
        assert body == {"workflow_id": wid, "n_taskforces": 2}
        wf = await ctx.store.get("workflows", {"workflow_id": wid})
        assert wf["deactivated"] == kind
        submitted, waiting = req.ids["uuids"]
        for uuid, phase in ((submitted, "pending-stopper"), (waiting, "cancelled")):
            tf = await ctx.store.get("taskforces", {"taskforce_uuid": uuid})
            assert tf["phase"] == phase
            last = tf["phase_change_log"][-1]
            assert (last["target_phase"], last["source_entity"]) == (phase, ENTITY[ident])

    return check


async def _mq_public(ctx: Ctx) -> Req:
    req = await _wf_shared(ctx)
    req.path += "/mq-profiles/public"
    return req


async def _mqs_public(ctx: Ctx) -> Req:
    req = await _mq_public(ctx)
    req.path = req.path.replace("/v1/workflows/", "/v1/mqs/workflows/", 1)
    return req


async def _check_mq_public(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    profiles = body["mqprofiles"]
    assert sorted(p["alias"] for p in profiles) == ["q0", "q2"]  # q1 connects the tasks only
    assert all(p["workflow_id"] == req.ids["workflow_id"] and p["is_public"] for p in profiles)
    assert all(SECRET_RE.fullmatch(p["auth_token"] or "") for p in profiles)


async def _check_get_workflow(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["workflow_id"] == req.ids["workflow_id"] and body["owner"] == "alice"


def _query(collection_key: str) -> tuple[Prepare, Check]:
    async def prepare(ctx: Ctx) -> Req:
        created = await ctx.shared()
        return Req(
            f"/v1/query/{collection_key.replace('_', '-')}",
            body={"query": {"workflow_id": created["workflow"]["workflow_id"]}},
            ids={"workflow_id": created["workflow"]["workflow_id"]},
        )

    async def check(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
        docs = body[collection_key]
        if ident in ("bob", "tmsB"):  # tmsB: none of these taskforces is at its schedd
            assert docs == [] and body["next_after"] is None
        else:
            expected = {"workflows": 1, "task_directives": 2, "taskforces": 2}[collection_key]
            assert len(docs) == expected
            assert all(d["workflow_id"] == req.ids["workflow_id"] and d["owner"] == "alice" for d in docs)

    return prepare, check


async def _td_shared(ctx: Ctx) -> Req:
    created = await ctx.shared()
    tid = created["task_directives"][0]["task_id"]
    return Req(f"/v1/task-directives/{tid}", ids={"task_id": tid})


async def _check_get_td(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["task_id"] == req.ids["task_id"] and body["owner"] == "alice"


async def _add_workers(ctx: Ctx) -> Req:
    req = await _td_shared(ctx)
    req.path += "/actions/add-workers"
    req.body = {"cluster_location": "remote", "n_workers": 3}
    return req


async def _check_add_workers(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["task_id"] == req.ids["task_id"] and body["n_workers"] == 3
    assert body["owner"] == "alice"  # the workflow's owner, even when an admin adds them
    assert body["schedd"] == "remote-schedd"
    assert body["phase_change_log"][0]["source_entity"] == ENTITY[ident]


async def _tf_shared(ctx: Ctx) -> Req:
    created = await ctx.shared()
    uuid = created["taskforces"][0]["taskforce_uuid"]
    return Req(f"/v1/taskforces/{uuid}", ids={"uuid": uuid})


async def _check_get_tf(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["taskforce_uuid"] == req.ids["uuid"] and body["owner"] == "alice"


async def _pending_starter(ctx: Ctx) -> Req:
    uuid = await ctx.taskforce_in("pending-starter")
    await ctx.store.update_where(
        "taskforces", {"taskforce_uuid": {"$ne": uuid}}, Change(set={"lease_until": 1e12})
    )
    return Req("/v1/tms/pending-starter/taskforces", query={"schedd": SCHEDD}, ids={"uuid": uuid})


async def _check_pending_starter(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["taskforce"]["taskforce_uuid"] == req.ids["uuid"]
    # the TMS gets the pilots' credentials of exactly that task's queues
    td = body["task_directive"]
    assert {p["mqid"] for p in body["mqprofiles"]} == {*td["input_queues"], *td["output_queues"]}
    assert all(SECRET_RE.fullmatch(p["auth_token"]) for p in body["mqprofiles"])


async def _pending_stopper(ctx: Ctx) -> Req:
    uuid = await ctx.taskforce_in("pending-stopper")
    await ctx.store.update_where(
        "taskforces", {"taskforce_uuid": {"$ne": uuid}}, Change(set={"lease_until": 1e12})
    )
    return Req("/v1/tms/pending-stopper/taskforces", query={"schedd": SCHEDD}, ids={"uuid": uuid})


async def _check_pending_stopper(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["taskforce_uuid"] == req.ids["uuid"] and body["phase"] == "pending-stopper"


def _tms_post(
    action: str, from_phase: str, body: dict[str, Any] | None, to_phase: str, *, failed: bool = False
) -> tuple[Prepare, Check]:
    """A TMS report on a fresh taskforce in `from_phase`; a success leaves it in `to_phase`."""

    async def prepare(ctx: Ctx) -> Req:
        uuid = await ctx.taskforce_in(from_phase)
        path = f"/v1/tms/{action}/taskforces/{uuid}" + ("/failed" if failed else "")
        return Req(path, body=copy.deepcopy(body), ids={"uuid": uuid})

    async def check(ctx: Ctx, ident: str, req: Req, resp: Any) -> None:
        assert resp == {"taskforce_uuid": req.ids["uuid"]}
        tf = await ctx.store.get("taskforces", {"taskforce_uuid": req.ids["uuid"]})
        assert tf["phase"] == to_phase
        last = tf["phase_change_log"][-1]
        assert (last["source_entity"], last["was_successful"]) == (ENTITY[ident], not failed)

    return prepare, check


async def _statuses(ctx: Ctx) -> Req:
    created = await ctx.shared()
    uuid = created["taskforces"][1]["taskforce_uuid"]
    return Req(
        "/v1/tms/statuses/taskforces",
        body={
            "compound_statuses_by_taskforce": {uuid: {"IDLE": {"null": 2}}},
            "top_task_errors_by_taskforce": {uuid: {"boom": 1}},
            "task_counts_by_taskforce": {uuid: {"succeeded": 3, "failed": 1}},
        },
        ids={"uuid": uuid},
    )


async def _check_statuses(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    if ident == "tmsB":
        error = "not at a schedd this token acts for"
        assert body == {"results": [{"uuid": req.ids["uuid"], "status": "failed", "error": error}]}
    else:
        assert body == {"results": [{"uuid": req.ids["uuid"], "status": "updated"}]}
    if ident != "tmsB":
        tf = await ctx.store.get("taskforces", {"taskforce_uuid": req.ids["uuid"]})
        assert tf["task_counts"] == {"succeeded": 3, "failed": 1}


async def _progress(ctx: Ctx) -> Req:
    req = await _wf_shared(ctx)
    req.path += "/progress"
    return req


async def _check_progress(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["workflow_id"] == req.ids["workflow_id"]
    assert set(body["queues"]) == {"q0", "q1", "q2"}
    assert body["totals"]["dead_lettered"] == 6 and body["totals"]["pending"] == 10  # q0, q1 are read


async def _retry(ctx: Ctx) -> Req:
    req = await _wf_shared(ctx)
    req.path += "/actions/retry-dead-letters"
    return req


async def _check_retry(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body == {"requeued": 6}


async def _check_metrics(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    names = {f.name for f in text_string_to_metric_families(body)}
    assert {"ewms_workflows", "ewms_taskforces", "ewms_http_request_duration_seconds"} <= names


def _check_page(expected: str) -> Check:
    """A public page: the same file for everyone (its data is behind the API)."""

    async def check(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
        assert isinstance(body, str) and expected in body

    return check


async def _check_dashboard_config(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body == {"oidc": None}  # a local secret: sign-in by a pasted token only


_NODES = iter(range(10**6))


async def _quarantined(ctx: Ctx) -> str:
    """A fresh machine quarantined at "local", where alice's shared taskforce ran (and failed)."""
    from ewms_server.ops import quarantine

    created = await ctx.shared()
    uuid = created["taskforces"][1]["taskforce_uuid"]
    machine = f"node-{next(_NODES)}"
    failed = {"tasks_failed": 9, "fatal": 0, "held": 0, "succeeded": 0}
    policy = ctx.srv.deps.cfg.quarantine
    await quarantine.record_report(
        ctx.store, {"machine_failures_by_taskforce": {uuid: {machine: failed}}}, policy
    )
    assert [e["machine"] for e in await quarantine.active(ctx.store, ["local"]) if e["machine"] == machine]
    return machine


async def _tms_quarantine(ctx: Ctx) -> Req:
    machine = await _quarantined(ctx)
    return Req("/v1/tms/quarantine", query={"schedd": SCHEDD}, ids={"machine": machine})


async def _get_quarantine(ctx: Ctx) -> Req:
    from ewms_server.ops import quarantine

    machine = await _quarantined(ctx)
    other = f"node-{next(_NODES)}"  # where no workflow of alice ran
    await quarantine.put(
        ctx.store, machine=other, location="local", reason="x", until=1e12, source="auto", now=1.0
    )
    return Req("/v1/quarantine", ids={"machine": machine, "other": other})


async def _check_get_quarantine(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    seen = {e["machine"] for e in body["machines"]}
    if ident == "admin":
        assert {req.ids["machine"], req.ids["other"]} <= seen
    elif ident == "alice":  # where her taskforces ran, nothing else
        assert req.ids["machine"] in seen and req.ids["other"] not in seen
    else:
        assert seen == set(), f"{ident} sees {seen}"


async def _check_tms_quarantine(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    entry = next(e for e in body["machines"] if e["machine"] == req.ids["machine"])
    assert (
        entry["location"] == "local" and entry["until"] > entry["since"] and "9 failures" in entry["reason"]
    )


async def _post_quarantine(ctx: Ctx) -> Req:
    machine = f"node-{next(_NODES)}"
    return Req(
        "/v1/quarantine",
        body={"machine": machine, "location": "remote", "reason": "disk"},
        ids={"machine": machine},
    )


async def _check_post_quarantine(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert (body["machine"], body["location"], body["reason"]) == (req.ids["machine"], "remote", "disk")
    doc = await ctx.store.get("quarantine", {"machine": req.ids["machine"]})
    assert doc is not None and doc["source"] == f"admin:{SUBJECT_ROLE[ident][0]}"


async def _delete_quarantine(ctx: Ctx) -> Req:
    machine = await _quarantined(ctx)
    return Req(f"/v1/quarantine/{machine}", query={"location": "local"}, ids={"machine": machine})


async def _check_delete_quarantine(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body == {"machine": req.ids["machine"], "location": "local", "lifted": 1}
    assert await ctx.store.get("quarantine", {"machine": req.ids["machine"]}) is None


def _static(path: str) -> Prepare:
    async def prepare(ctx: Ctx) -> Req:
        return Req(path)

    return prepare


async def _create(ctx: Ctx) -> Req:
    return Req("/v1/workflows", body=workflow_body(n_tasks=1))


async def _nothing(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    return None


async def _check_created(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    sub = SUBJECT_ROLE[ident][0]
    assert body["workflow"]["owner"] == sub
    assert all(x["owner"] == sub for x in [*body["task_directives"], *body["taskforces"]])
    assert all(tf["phase_change_log"][0]["source_entity"] == ENTITY[ident] for tf in body["taskforces"])


async def _alice_secret(ctx: Ctx) -> Req:
    await ctx.ok("alice", "PUT", "/v1/secrets/ALICE_ONLY", {"value": USER_SECRET})
    return Req("/v1/secrets/ALICE_ONLY", ids={"key": "ALICE_ONLY"})


async def _list_secrets(ctx: Ctx) -> Req:
    await _alice_secret(ctx)
    return Req("/v1/secrets")


async def _check_list_secrets(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    keys = [s["key"] for s in body["secrets"]]
    assert ("ALICE_ONLY" in keys) == (ident == "alice")  # an admin sees its own only
    assert all(set(s) == {"key", "created_ts", "updated_ts"} for s in body["secrets"])


async def _put_secret(ctx: Ctx) -> Req:
    return Req("/v1/secrets/MATRIX_KEY", body={"value": USER_SECRET}, ids={"key": "MATRIX_KEY"})


async def _check_put_secret(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert set(body) == {"key", "created_ts", "updated_ts"} and body["key"] == "MATRIX_KEY"
    sub = SUBJECT_ROLE[ident][0]
    doc = await ctx.store.get("secrets", {"owner": sub, "key": "MATRIX_KEY"})
    assert doc is not None and USER_SECRET not in json.dumps(doc)


async def _check_deleted_secret(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["key"] == "ALICE_ONLY"
    assert await ctx.store.get("secrets", {"owner": "alice", "key": "ALICE_ONLY"}) is None


JOB_SCRIPT = b"echo hi > out.txt\n"


def _job_upload() -> tuple[bytes, str]:
    body = MultipartBody([Part("file", "run.sh", data=JOB_SCRIPT), Part("n_cores", data=b"1")])
    return b"".join(body), body.content_type


async def _new_job(ctx: Ctx, *, finished: bool = False) -> str:
    """A fresh job of alice; `finished`: its runner (with a token made here) uploaded out.txt
    and reported Completed."""
    raw, ctype = _job_upload()
    r = await ctx.call("alice", "POST", "/v1/jobs", raw_body=raw, content_type=ctype)
    assert r.status == 201, r.text
    jid = str(r.json["id"])
    if finished:
        token, digest = new_runner_token()
        await ctx.store.transition(
            "jobs", {"job_id": jid}, Change(set={"runner_token_sha256": digest, "published": True})
        )
        base = f"/v1/jobs/{jid}/runner"
        out = await ctx.call("x", "PUT", base + "/outputs/out.txt", token=token, raw_body=b"hi\n",
                             content_type="application/octet-stream")  # fmt: skip
        assert out.status == 200, out.text
        done = await ctx.call(
            "x", "POST", base + "/status", {"state": "Completed", "exit_code": 0}, token=token
        )
        assert done.status == 200, done.text
    return jid


def _job_route(suffix: str, *, finished: bool = False, fresh: bool = False) -> Prepare:
    async def prepare(ctx: Ctx) -> Req:
        key = f"job-{finished}"
        if fresh or key not in ctx.jobs:
            ctx.jobs[key] = await _new_job(ctx, finished=finished)
        jid = ctx.jobs[key]
        req = Req(f"/v1/jobs/{jid}{suffix}", ids={"job_id": jid})
        if suffix.startswith("/runner/outputs"):
            req.raw, req.content_type = b"forged", "application/octet-stream"
        if suffix == "/runner/status":
            req.body = {"state": "Completed", "exit_code": 0}
        return req

    return prepare


async def _jobs_upload(ctx: Ctx) -> Req:
    raw, ctype = _job_upload()
    return Req("/v1/jobs", raw=raw, content_type=ctype)


async def _check_job_created(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    job = await ctx.store.get("jobs", {"job_id": body["id"]})
    assert job is not None and job["owner"] == SUBJECT_ROLE[ident][0] and body["status"] == "Queued"


async def _check_job_list(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    owners = {j["owner"] for j in body["jobs"]}
    assert owners <= {SUBJECT_ROLE[ident][0]} if ident != "admin" else True


async def _check_job(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body["id"] == req.ids["job_id"] and body["owner"] == "alice"
    assert "runner_token_sha256" not in body


async def _check_job_deleted(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body == {"id": req.ids["job_id"], "deleted": True}
    assert await ctx.store.get("jobs", {"job_id": req.ids["job_id"]}) is None


async def _check_job_files(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert [f["path"] for f in body["files"]] == ["out.txt"]


async def _check_job_file(ctx: Ctx, ident: str, req: Req, body: Any) -> None:
    assert body == "hi\n"


ROWS: dict[tuple[str, str], tuple[Prepare, Check]] = {
    ("GET", "/v1/"): (_static("/v1/"), _nothing),
    ("GET", "/v1/health"): (_static("/v1/health"), _nothing),
    ("GET", "/v1/schema/openapi"): (_static("/v1/schema/openapi"), _nothing),
    ("POST", "/v1/workflows"): (_create, _check_created),
    ("GET", WF): (_wf_shared, _check_get_workflow),
    ("POST", WF + "/actions/abort"): (_deactivate("abort"), _check_deactivated("ABORTED")),
    ("POST", WF + "/actions/finished"): (_deactivate("finished"), _check_deactivated("FINISHED")),
    ("GET", WF + "/mq-profiles/public"): (_mq_public, _check_mq_public),
    ("GET", MQS + "/mq-profiles/public"): (_mqs_public, _check_mq_public),
    ("POST", "/v1/query/workflows"): _query("workflows"),
    ("GET", TD): (_td_shared, _check_get_td),
    ("POST", TD + "/actions/add-workers"): (_add_workers, _check_add_workers),
    ("POST", "/v1/query/task-directives"): _query("task_directives"),
    ("GET", TF): (_tf_shared, _check_get_tf),
    ("POST", "/v1/query/taskforces"): _query("taskforces"),
    ("GET", "/v1/tms/pending-starter/taskforces"): (_pending_starter, _check_pending_starter),
    ("GET", "/v1/tms/pending-stopper/taskforces"): (_pending_stopper, _check_pending_stopper),
    ("POST", "/v1/tms/condor-submit/taskforces/{taskforce_uuid}"): _tms_post(
        "condor-submit", "pending-starter", SUBMIT_BODY, "condor-submit"
    ),
    ("POST", "/v1/tms/condor-submit/taskforces/{taskforce_uuid}/failed"): _tms_post(
        "condor-submit", "pending-starter", {"error": "schedd said no"}, "pending-starter", failed=True
    ),
    ("POST", "/v1/tms/condor-rm/taskforces/{taskforce_uuid}"): _tms_post(
        "condor-rm", "pending-stopper", None, "condor-rm"
    ),
    ("POST", "/v1/tms/condor-rm/taskforces/{taskforce_uuid}/failed"): _tms_post(
        "condor-rm", "pending-stopper", {"error": "schedd unreachable"}, "pending-stopper", failed=True
    ),
    ("POST", "/v1/tms/condor-complete/taskforces/{taskforce_uuid}"): _tms_post(
        "condor-complete", "condor-submit", {"condor_complete_ts": 1_700_000_000.0}, "condor-complete"
    ),
    ("POST", "/v1/tms/statuses/taskforces"): (_statuses, _check_statuses),
    ("GET", WF + "/progress"): (_progress, _check_progress),
    ("POST", WF + "/actions/retry-dead-letters"): (_retry, _check_retry),
    ("GET", "/metrics"): (_static("/metrics"), _check_metrics),
    ("GET", "/v1/secrets"): (_list_secrets, _check_list_secrets),
    ("PUT", "/v1/secrets/{key}"): (_put_secret, _check_put_secret),
    ("DELETE", "/v1/secrets/{key}"): (_alice_secret, _check_deleted_secret),
    ("GET", "/v1/pilot/secrets"): (_static("/v1/pilot/secrets"), _nothing),
    ("GET", "/v1/docs"): (_static("/v1/docs"), _check_page("swagger-ui-bundle.js")),
    ("GET", "/v1/docs/{asset}"): (_static("/v1/docs/init.js"), _check_page("SwaggerUIBundle")),
    ("GET", "/v1/dashboard/config"): (_static("/v1/dashboard/config"), _check_dashboard_config),
    ("GET", "/dashboard/{path}"): (_static("/dashboard/"), _check_page("<title>EWMS dashboard</title>")),
    ("GET", "/v1/tms/quarantine"): (_tms_quarantine, _check_tms_quarantine),
    ("GET", "/v1/quarantine"): (_get_quarantine, _check_get_quarantine),
    ("POST", "/v1/quarantine"): (_post_quarantine, _check_post_quarantine),
    ("DELETE", "/v1/quarantine/{machine}"): (_delete_quarantine, _check_delete_quarantine),
    ("GET", "/v1/jobs"): (_static("/v1/jobs"), _check_job_list),
    ("POST", "/v1/jobs"): (_jobs_upload, _check_job_created),
    ("GET", JOB): (_job_route(""), _check_job),
    ("DELETE", JOB): (_job_route("", fresh=True), _check_job_deleted),
    ("GET", JOB + "/files"): (_job_route("/files", finished=True), _check_job_files),
    ("GET", JOB + "/files/{path}"): (_job_route("/files/out.txt", finished=True), _check_job_file),
    ("GET", JOB + "/runner/inputs"): (_job_route("/runner/inputs"), _nothing),
    ("GET", JOB + "/runner/inputs/{path}"): (_job_route("/runner/inputs/run.sh"), _nothing),
    ("PUT", JOB + "/runner/outputs/{path}"): (_job_route("/runner/outputs/x.txt"), _nothing),
    ("POST", JOB + "/runner/status"): (_job_route("/runner/status"), _nothing),
}


# -- the table is complete ---------------------------------------------------------------


def _schema_operations() -> dict[tuple[str, str], dict[str, Any]]:
    spec = json.loads(load_openapi_text())
    return {
        (m.upper(), p): op
        for p, item in spec["paths"].items()
        for m, op in item.items()
        if m in ("get", "put", "post", "patch", "delete")
    }


def test_matrix_covers_every_operation() -> None:
    ops = _schema_operations()
    assert set(MATRIX) == set(ops), "add a MATRIX row for every operation of schema/openapi.json"
    assert set(ROWS) == set(MATRIX)
    served = {(m, h.OPENAPI_PATH) for h in HANDLERS for m in h.ROLES}
    assert served == set(ops), "every route the server serves is in the schema, and back"
    for key, row in MATRIX.items():
        declared = set(ops[key]["responses"])
        assert {str(s) for s in row} <= declared, f"{key}: statuses {row} not all declared ({declared})"
        open_route = ops[key].get("security") == []
        assert open_route == (row[0] == 200), f"{key}: schema security disagrees with the table"


async def test_served_schema_is_the_published_one(server: RunningServer) -> None:
    ctx = Ctx(server)
    r = await ctx.call("none", "GET", "/v1/schema/openapi")
    assert r.status == 200 and json.loads(r.text) == json.loads(load_openapi_text())


# -- the matrix ------------------------------------------------------------------------


@pytest.mark.parametrize("op", list(MATRIX), ids=[f"{m} {p}" for m, p in MATRIX])
async def test_matrix(server: RunningServer, op: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ewms_server.requests")
    method, _ = op
    prepare, check = ROWS[op]
    ctx = Ctx(server)
    failures: list[str] = []
    for ident, expected in zip(IDENTITIES, MATRIX[op], strict=True):
        req = await prepare(ctx)
        await ctx.settle()
        before = await ctx.snapshot()
        caplog.clear()
        r = await ctx.call(
            ident, method, req.path, req.body, req.query, raw_body=req.raw, content_type=req.content_type
        )
        where = f"{ident}: {method} {req.path}"
        if r.status != expected:
            failures.append(f"{where}: expected {expected}, got {r.status} {r.text[:300]}")
            continue
        body = r.json
        if expected >= 400:
            assert body == {"code": expected, "error": body["error"]}, where
            if expected == 401:
                assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), where
        else:
            await check(ctx, ident, req, body)
        if expected >= 400 or expected == 207:  # 207: every taskforce of the report refused
            await ctx.settle()
            assert await ctx.snapshot() == before, f"{where}: a refused request changed the database"
        assert USER_SECRET not in r.text, f"{where}: a secret's value in the answer"
        # queue credentials: a user sees only the public queues of its own workflows
        secrets = await ctx.secrets()
        seen = set(SECRET_RE.findall(r.text))
        if ident in ("none", "expired", "badsig", "bob", "tmsB", "tms0"):
            assert not seen, f"{where}: leaked queue credentials"
        elif ident == "alice":
            for s in seen:
                assert secrets[s]["owner"] == "alice" and secrets[s]["is_public"], f"{where}: leaked {s}"
        # a state-changing request names its actual subject in the log
        if method in ("POST", "PUT", "DELETE"):
            entity = ENTITY.get(ident, "none:anonymous")
            line = f"{method} {req.path} {expected} by {entity}"
            lines = [rec.getMessage() for rec in caplog.records if rec.name == "ewms_server.requests"]
            assert line in lines, f"{where}: no log line {line!r} in {lines}"
    assert not failures, "\n".join(failures)


async def test_unscoped_tms_token_with_the_legacy_setting(backend: str) -> None:
    """EWMS_AUTH_ALLOW_UNSCOPED_TMS=true: a TMS token naming no schedds does everything the
    schedd-bound TMS does (the tms0 column turns into the tms one)."""
    async with running_server(
        cluster_locations=LOCATIONS,
        mongodb_url=backend,
        broker=TokenBroker(),
        env={"EWMS_LOOP_INTERVAL_S": "1", "EWMS_AUTH_ALLOW_UNSCOPED_TMS": "true"},
    ) as srv:
        ctx = Ctx(srv)
        ops = [op for op, row in MATRIX.items() if row[IDENTITIES.index("tms")] == 200]
        assert (
            len(ops) == 18
        )  # every TMS route and taskforce read, /v1/, health, schema, the pages, the TMS's quarantine
        for method, path in ops:
            prepare, check = ROWS[(method, path)]
            req = await prepare(ctx)
            await ctx.settle()
            r = await ctx.call("tms0", method, req.path, req.body, req.query)
            assert r.status == 200, (method, path, r.status, r.text)
            await check(ctx, "tms0", req, r.json)


# -- ids leak nothing --------------------------------------------------------------------


async def test_other_users_object_is_indistinguishable_from_a_missing_one(server: RunningServer) -> None:
    ctx = Ctx(server)
    created = await ctx.new_workflow()
    real = {
        "workflow_id": created["workflow"]["workflow_id"],
        "task_id": created["task_directives"][0]["task_id"],
        "taskforce_uuid": created["taskforces"][0]["taskforce_uuid"],
    }
    fake = {
        "workflow_id": "WF-000000000000-0000-000000",
        "task_id": "TK-000000000000-0000-000000",
        "taskforce_uuid": "TF-000000000000-0000-000000",
    }
    routes = [
        ("GET", WF, None),
        ("POST", WF + "/actions/abort", None),
        ("POST", WF + "/actions/finished", None),
        ("GET", WF + "/mq-profiles/public", None),
        ("GET", MQS + "/mq-profiles/public", None),
        ("GET", WF + "/progress", None),
        ("POST", WF + "/actions/retry-dead-letters", None),
        ("GET", TD, None),
        ("POST", TD + "/actions/add-workers", {"cluster_location": "local", "n_workers": 1}),
        ("GET", TF, None),
    ]
    for method, template, body in routes:
        got_real = await ctx.call("bob", method, template.format(**real), body)
        got_fake = await ctx.call("bob", method, template.format(**fake), body)
        assert got_real.status == got_fake.status == 404, (method, template)
        # the same message, up to the id itself
        norm_real = got_real.json["error"]
        for k in real:
            norm_real = norm_real.replace(real[k], "<id>")
        norm_fake = got_fake.json["error"]
        for k in fake:
            norm_fake = norm_fake.replace(fake[k], "<id>")
        assert norm_real == norm_fake, (method, template, norm_real, norm_fake)
    # and alice's workflow is untouched by all that
    wf = await ctx.store.get("workflows", {"workflow_id": real["workflow_id"]})
    assert wf["deactivated"] is None
    assert await ctx.store.count("taskforces", {"workflow_id": real["workflow_id"]}) == 2
