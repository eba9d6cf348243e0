"""The route table, the handlers and schema/openapi.json describe the same API."""

from __future__ import annotations

import re

from ewms_server.config import Config
from ewms_server.handlers.routes import HANDLERS
from ewms_server.phases import Phase
from ewms_server.schema import OpenAPI


def _example(openapi_path: str) -> str:
    return re.sub(r"\{[^}]+\}", "X-1", openapi_path)


def test_no_route_shadows_another() -> None:
    for h in HANDLERS:
        path = _example(h.OPENAPI_PATH)
        first = next(x for x in HANDLERS if re.fullmatch(x.ROUTE, path))
        assert first is h, f"{h.__name__} is shadowed by {first.__name__}"


def test_every_schema_operation_has_a_handler_and_back() -> None:
    schema = OpenAPI()
    served = {(h.OPENAPI_PATH, m) for h in HANDLERS for m in h.ROLES}
    assert served == set(schema.operations())
    for h in HANDLERS:
        for method in h.ROLES:
            assert hasattr(h, method.lower()), f"{h.__name__} lacks {method.lower()}()"


def test_every_route_has_a_body_limit_setting() -> None:
    cfg = Config.from_env({})
    for h in HANDLERS:
        limit = getattr(cfg, h.MAX_BODY_SETTING)
        assert isinstance(limit, int) and limit >= 1024, h.__name__
    statuses = next(h for h in HANDLERS if h.OPENAPI_PATH == "/v1/tms/statuses/taskforces")
    assert getattr(cfg, statuses.MAX_BODY_SETTING) == cfg.max_statuses_body_bytes > cfg.max_body_bytes


def _path_words(openapi_path: str) -> list[str]:
    """`/v1/workflows/{workflow_id}/mq-profiles/public` -> workflows, id, mq, profiles, public."""
    words = []
    segments = openapi_path.strip("/").split("/")
    for segment in segments[1:] if segments[0] == "v1" else segments:
        if segment.startswith("{"):
            words.append("uuid" if segment.endswith("uuid}") else "id")
        else:
            words += segment.strip("/").split("-")
    return words


SKIPPABLE = {"taskforces", "openapi"}
"""Words a name may leave out: every /v1/tms/ route is about taskforces (EWMS's names say only
the action), and the schema is the OpenAPI one."""


def name_follows_route(name: str, openapi_path: str) -> bool:
    """The name is the route's words in order (each may be singular; only SKIPPABLE ones may
    be left out), then `Handler`; `/v1/` is `MainHandler`."""
    if not name.endswith("Handler"):
        return False
    rest = name.removesuffix("Handler").lower()
    words = _path_words(openapi_path)
    if not words:
        return rest == "main"
    pos = 0
    for word in words:
        for form in (word, word.removesuffix("s")):
            if form and rest.startswith(form, pos):
                pos += len(form)
                break
        else:
            if word not in SKIPPABLE:
                return False
    return pos == len(rest)


def test_handler_names_follow_routes() -> None:
    for h in HANDLERS:
        assert name_follows_route(h.__name__, h.OPENAPI_PATH), (
            f"{h.__name__} is not named after {h.OPENAPI_PATH}"
        )
    assert len({h.__name__ for h in HANDLERS}) == len(HANDLERS)


def test_a_handler_named_after_another_route_is_caught() -> None:
    assert not name_follows_route("WorkflowsHandler", "/v1/taskforces/{taskforce_uuid}")
    assert not name_follows_route(
        "WorkflowIDHandler", "/v1/workflows/{workflow_id}/progress"
    )  # progress left out
    assert not name_follows_route("TaskforceUUIDHandler", "/v1/tms/condor-rm/taskforces/{taskforce_uuid}")
    assert not name_follows_route("WorkflowIDActionsAbort", "/v1/workflows/{workflow_id}/actions/abort")
    assert not name_follows_route("HealthHandler", "/v1/")
    assert not name_follows_route("WorkflowIDActionsHandler", "/v1/workflows/{workflow_id}/actions/finished")


def test_phase_enum_matches_schema() -> None:
    schema = OpenAPI()
    assert schema.schemas["TaskforceObject"]["properties"]["phase"]["enum"] == [str(p) for p in Phase]
    log = schema.schemas["PhaseChangeLogEntry"]["properties"]["target_phase"]["enum"]
    assert log == [str(p) for p in Phase]


def test_every_schema_field_is_described() -> None:
    schema = OpenAPI()
    for name in (
        "WorkflowObject",
        "TaskDirectiveObject",
        "TaskforceObject",
        "MQProfileObject",
        "TaskPostObject",
        "WorkflowPostObject",
        "PilotConfigObject",
        "WorkerConfigObject",
    ):
        for field, sub in schema.doc["components"]["schemas"][name]["properties"].items():
            assert "description" in sub or "$ref" in sub, f"{name}.{field} has no description"
