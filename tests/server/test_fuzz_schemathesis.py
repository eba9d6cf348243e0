"""Fuzz the published OpenAPI schema (GET /v1/schema/openapi) of a live server with schemathesis.

The server runs in a background thread with its own event loop (schemathesis's calls are
synchronous), on the embedded database, with a random signing secret. Every operation gets a
bounded number of generated requests, positive and negative: as an admin and as a user with
random path ids, and as an admin with the ids of real objects (so the handlers go past the lookup).
No response may be a 5xx, and every response must match the schema: a declared status code, the
declared content type, a body valid against the response schema.

Besides the generated requests, every operation with a body is always tried with the bodies
that once answered 500 (issue 9, finding 5), which random generation does not find: a value
nested 1,020 and 5,000 deep in its first field (as lists, and as objects; sent as raw JSON
bytes, deeper than Python's own encoder goes), and on the query routes a
projection holding a path and a path inside it, and a `$not` of a plain value.

EWMS_FUZZ_EXAMPLES sets the number of examples per operation of the largest run (default 40).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from ewms_server.schema import load_openapi_text
from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, workflow_body

MAX_EXAMPLES = int(os.environ.get("EWMS_FUZZ_EXAMPLES", "40"))
DEPTHS = (1020, 5000)
"""About 1,000 (within the 1,024 levels orjson decodes), and more than the recursion limit
hypothesis raises while it runs a test (so that a recursing decoder or validator fails here too)."""
QUERY_500S: list[dict[str, Any]] = [
    {"projection": ["workflow_id", "workflow_id.x"]},
    {"query": {"workflow_id": {"$not": {"x": "y"}}}},
    {"query": {"workflow_id": {"$not": {}}}},
]


def _deep(field: str, kind: type, depth: int) -> bytes:
    opening, closing = (b"[", b"]") if kind is list else (b'{"a": ', b"}")
    return b'{"%s": %s1%s}' % (field.encode(), opening * depth, closing * depth)


def explicit_bodies(path: str, method: str) -> list[Any]:
    """The bodies every run of this operation tries first."""
    op = json.loads(load_openapi_text())["paths"][path][method.lower()]
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is None:
        return []
    if "$ref" in body:
        body = json.loads(load_openapi_text())["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    first = next(iter(body.get("properties", {"x": None})))
    bodies: list[Any] = [_deep(first, kind, depth) for kind in (list, dict) for depth in DEPTHS]
    if path.startswith("/v1/query/"):
        bodies += QUERY_500S
    return bodies


POSITIVE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
NEGATIVE_CHECKS = [*POSITIVE_CHECKS, negative_data_rejection]


class ThreadedServer:
    """running_server() on its own event loop in a daemon thread."""

    def __init__(self, mongodb_url: str | None = None) -> None:
        self.mongodb_url = mongodb_url
        self.srv: RunningServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="ewms-fuzz-server", daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with running_server(
                cluster_locations=LOCATIONS,
                mongodb_url=self.mongodb_url,
                env={"EWMS_LOOP_INTERVAL_S": "1"},
            ) as srv:
                self.srv = srv
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(serve())
        except BaseException as e:  # reported to the test thread
            self._error = e
            self._ready.set()

    def __enter__(self) -> RunningServer:
        self._thread.start()
        assert self._ready.wait(30), "the server did not start"
        if self._error is not None:
            raise self._error
        assert self.srv is not None
        return self.srv

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def live() -> Iterator[RunningServer]:
    # thousands of expected 4xx: keep tornado's access log (a WARNING each) out of the report
    access = logging.getLogger("tornado.access")
    level = access.level
    access.setLevel(logging.ERROR)
    try:
        with ThreadedServer() as srv:
            # documents in every collection, so that filters are evaluated, not skipped
            _http(srv, "POST", "/v1/workflows", srv.token(role="user", sub="carol"), workflow_body())
            yield srv
    finally:
        access.setLevel(level)


def _http(srv: RunningServer, method: str, path: str, token: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        srv.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _real_ids(srv: RunningServer) -> dict[str, str]:
    """A workflow of alice whose taskforces have reached pending-starter."""
    token = srv.token(role="user", sub="alice")
    created = _http(srv, "POST", "/v1/workflows", token, workflow_body(n_tasks=2))
    uuid = created["taskforces"][0]["taskforce_uuid"]
    deadline = time.monotonic() + 30
    while (tf := _http(srv, "GET", f"/v1/taskforces/{uuid}", token))["phase"] != "pending-starter":
        if time.monotonic() > deadline:
            health = _http(srv, "GET", "/v1/health", token)
            raise AssertionError(f"the taskforce was not launched: {tf}; health: {health}")
        time.sleep(0.05)
    return {
        "workflow_id": created["workflow"]["workflow_id"],
        "task_id": created["task_directives"][0]["task_id"],
        "taskforce_uuid": uuid,
    }


def _fuzz(
    srv: RunningServer, token: str, *, positive: int, negative: int, real_ids: dict[str, str] | None = None
) -> list[str]:
    """Run every operation of the served schema; return one report per failing operation.
    With `real_ids`, only the operations with an id in their path run, with the id pinned."""
    schema = schemathesis.openapi.from_url(f"{srv.url}/v1/schema/openapi", timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    n_ops = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises here
        n_ops += 1
        params = {p.name for p in operation.path_parameters}
        fixed = {k: v for k, v in (real_ids or {}).items() if k in params}
        if real_ids is not None and not fixed:
            continue  # nothing to pin: the random-id runs cover it
        for mode, checks, n in (
            (GenerationMode.POSITIVE, POSITIVE_CHECKS, positive),
            (GenerationMode.NEGATIVE, NEGATIVE_CHECKS, negative),
        ):
            if n <= 0:
                continue
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)

            @given(case=strategy)
            @settings(
                max_examples=n,
                deadline=None,
                derandomize=True,  # the same requests on every CI run
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                report_multiple_bugs=False,
            )
            def run(case: schemathesis.Case) -> None:
                # the token goes into the case itself, so the checks judge what was really sent
                # (a negated Authorization header put back is no negation). Called at once,
                # inside this iteration: the loop variable is the right one
                case.headers = {**(case.headers or {}), **headers}
                case.call_and_validate(base_url=srv.url, checks=checks, timeout=30)  # noqa: B023

            if mode == GenerationMode.POSITIVE:
                ids = fixed or {name: "X-0" for name in params}
                for body in explicit_bodies(operation.path, operation.method):
                    run = hypothesis.example(case=operation.Case(body=body, path_parameters=ids))(run)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # nothing to negate (no parameters, no body)
            except (Exception, FailureGroup) as e:  # a failing check: go on, to report every operation
                failures.append(f"--- {operation.label} ({mode.value}):\n{e}")
    # schemathesis leaves out the operation that serves the schema itself
    assert n_ops == 47, f"the served schema has {n_ops} operations"
    return failures


def _n(fraction: float) -> int:
    return max(1, round(MAX_EXAMPLES * fraction))


def test_fuzz_as_admin(live: RunningServer) -> None:
    """Random ids as an admin: every route past authentication, every validation path."""
    failures = _fuzz(live, live.token(role="admin", sub="root"), positive=_n(1), negative=_n(0.4))
    assert not failures, "\n\n".join(failures)


def test_fuzz_as_user(live: RunningServer) -> None:
    """Random ids as a user: TMS routes are 403, others' objects 404, all as the schema says."""
    failures = _fuzz(live, live.token(role="user", sub="bob"), positive=_n(0.4), negative=_n(0.2))
    assert not failures, "\n\n".join(failures)


def test_fuzz_real_objects_as_admin(live: RunningServer) -> None:
    """The ids of real objects (a launched workflow of alice) pinned in every path: the handlers
    and the TMS transitions run on real documents with generated bodies."""
    ids = _real_ids(live)
    failures = _fuzz(
        live, live.token(role="admin", sub="root"), positive=_n(1), negative=_n(0.4), real_ids=ids
    )
    assert not failures, "\n\n".join(failures)
