"""Property test of /v1/query/*: any filter built from the allowed language, with any values,
and any projection, is a 200 or a clear 400 on both engines, never a 500.

schemathesis sees the query as a free-form object and almost never writes an operator; this
draws from the language itself: field paths of the collection, every allowed operator at
every place, nested logical clauses, and values of every JSON type (large integers, empty
and nested containers, keys that look like operators).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ewms_server.query_filter import FIELD_OPERATORS, LOGICAL
from ewms_server.schema import OpenAPI
from ewms_server.testing import RunningServer
from tests.conftest import workflow_body
from tests.server.test_fuzz_schemathesis import ThreadedServer

ROUTES = {
    "workflows": "WorkflowObject",
    "task-directives": "TaskDirectiveObject",
    "taskforces": "TaskforceObject",
}
SUBFIELDS = ["a", "0", "schedd", "RUNNING", "x_y", "$x", ""]
OPERATORS = [*sorted(FIELD_OPERATORS), "$regex", "$where"]
EXAMPLES = 150

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.sampled_from(["string", "int", "object", "array", "bool", "x", "", "pending-starter"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(SUBFIELDS), inner, max_size=2)
    ),
    max_leaves=6,
)


def filters(fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    paths = st.sampled_from(fields) | st.builds(
        lambda f, s: f"{f}.{s}", st.sampled_from(fields), st.sampled_from(SUBFIELDS)
    )
    operator_objects: st.SearchStrategy[Any] = st.deferred(
        lambda: st.dictionaries(st.sampled_from(OPERATORS), arguments, max_size=2)
    )
    arguments = values | operator_objects | st.lists(values | operator_objects, max_size=3)
    clauses = st.dictionaries(paths, values | operator_objects, min_size=1, max_size=2)
    documents: st.SearchStrategy[Any] = st.deferred(
        lambda: (
            clauses
            | st.builds(
                lambda op, subs: {op: subs},
                st.sampled_from(sorted(LOGICAL)),
                st.lists(documents | values, max_size=3),
            )
        )
    )
    return documents


def projections(fields: list[str]) -> st.SearchStrategy[list[str]]:
    paths = st.sampled_from(fields) | st.builds(
        lambda f, s: f"{f}.{s}", st.sampled_from(fields), st.sampled_from(SUBFIELDS[:5])
    )
    return st.lists(paths, max_size=4)


@pytest.fixture(scope="module", params=[None, "mongomock://"], ids=["sqlite", "mongomock"])
def live(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with ThreadedServer(request.param) as srv:
        _post(srv, "/v1/workflows", workflow_body(n_tasks=2))  # documents to filter
        yield srv


def _post(srv: RunningServer, path: str, body: Any) -> tuple[int, Any]:
    req = urllib.request.Request(
        srv.url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {srv.token(role='admin', sub='root')}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_any_filter_is_a_200_or_a_400(live: RunningServer, route: str) -> None:
    fields = sorted(OpenAPI().schemas[ROUTES[route]]["properties"])
    key = route.replace("-", "_")

    @given(query=filters(fields), projection=projections(fields))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(query: dict[str, Any], projection: list[str]) -> None:
        status, body = _post(live, f"/v1/query/{route}", {"query": query, "projection": projection})
        assert status in (200, 400), (status, body, query, projection)
        if status == 200:
            assert isinstance(body[key], list)
        else:
            assert body["code"] == 400 and body["error"]

    check()
