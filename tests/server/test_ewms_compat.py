"""What an EWMS client sees: EWMS-shaped requests in, EWMS-shaped responses out (issue 10 A).

The requests are shaped as EWMS's own clients send them (the example bodies of
/work/shared/reference/ewms-api.txt and EWMS's client scripts: numbers and booleans in
`pilot_config.environment`, integer sizes, `image_source: "auto"`, priorities above 100, the
deprecated `collector` query parameter). Every response is validated against the schema the
server serves, and carries exactly the fields that schema lists: EWMS's, plus our documented
`owner`, `notify_url`, `cluster_location`, `condor_complete_ts`, `task_counts` and `diagnosis`, never the
server's bookkeeping.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import requests
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from rest_tools.client import RestClient
from tornado.httpclient import AsyncHTTPClient

from ewms_server.schema import OpenAPI
from ewms_server.testing import RunningServer
from tests.conftest import SCHEDD
from tests.server.helpers import error_of, submit, take_starter, wait_phase
from tms.config import TmsConfig
from tms.submit import build_spec, pilot_image

# the objects of ewms-api.txt's examples: every one of their fields is in ours
EWMS_WORKFLOW = {"workflow_id", "timestamp", "priority", "deactivated", "deactivated_ts"}
EWMS_TASK_DIRECTIVE = {
    "task_id", "workflow_id", "cluster_locations", "task_image", "task_args", "task_env",
    "init_image", "init_args", "init_env", "timestamp", "input_queues", "output_queues",
}  # fmt: skip
EWMS_TASKFORCE = {
    "taskforce_uuid", "task_id", "workflow_id", "timestamp", "priority", "collector", "schedd",
    "n_workers", "pilot_config", "worker_config", "cluster_id", "submit_dict",
    "job_event_log_fpath", "phase", "phase_change_log", "compound_statuses", "top_task_errors",
}  # fmt: skip
OURS = {"owner", "cluster_location", "condor_complete_ts", "task_counts", "diagnosis"}  # documented additions
BOOKKEEPING = ("taskforces_stopped", "queues_revoked", "queues_deleted", "lease_until", "n_failed_submits")
BOOKKEEPING += ("statuses_ts", "origin", "notify_watch")


def ewms_body() -> dict[str, Any]:
    """POST /v1/workflows as EWMS's clients send it."""
    return {
        "tasks": [
            {
                "cluster_locations": ["local", "remote"],
                "task_image": "/cvmfs/icecube.opensciencegrid.org/containers/ewms/example:1.0",
                "task_args": "python -m example --in in.json",
                "task_env": {"TASKS_PER_JOB": "ewms", "FAIL_PROB": "0.0"},
                "init_image": "",
                "init_args": "",
                "init_env": {},
                "input_queue_aliases": ["input-queue"],
                "output_queue_aliases": ["output-queue"],
                "pilot_config": {
                    "tag": "1.0.5",
                    "image_source": "auto",
                    "environment": {
                        "EWMS_PILOT_TASK_TIMEOUT": 3600,
                        "EWMS_PILOT_DUMP_TASK_OUTPUT": True,
                        "EWMS_PILOT_QUARANTINE_TIME": 1.5,
                        "EWMS_PILOT_PREFETCH": "2",
                    },
                    "input_files": [],
                },
                "worker_config": {
                    "do_transfer_worker_stdouterr": False,
                    "max_worker_runtime": 3600,
                    "n_cores": 1,
                    "priority": 250,
                    "worker_disk": 1073741824,
                    "worker_memory": 536870912,
                    "condor_requirements": "",
                },
                "n_workers": 2,
            }
        ],
        "public_queue_aliases": ["input-queue", "output-queue"],
        "priority": 150,
    }


class Served:
    """The schema the server serves, and validators of its response schemas."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._registry = Registry().with_resource(
            "urn:served", Resource.from_contents(doc, default_specification=DRAFT202012)
        )

    def validator(self, pointer: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator({"$ref": f"urn:served#{pointer}"}, registry=self._registry)

    def check(self, method: str, path: str, body: Any, status: int = 200) -> None:
        escaped = path.replace("~", "~0").replace("/", "~1")
        where = f"/paths/{escaped}/{method.lower()}/responses/{status}/content/application~1json/schema"
        errors = [e.message for e in self.validator(where).iter_errors(body)]
        assert not errors, (method, path, errors[:3])

    def fields(self, component: str) -> set[str]:
        return set(self.doc["components"]["schemas"][component]["properties"])


@pytest.fixture
async def served(server: RunningServer) -> Served:
    resp = await AsyncHTTPClient().fetch(server.url + "/v1/schema/openapi")
    return Served(json.loads(resp.body))


def no_bookkeeping(body: Any) -> None:
    text = json.dumps(body)
    assert not [f for f in BOOKKEEPING if f'"{f}"' in text], text[:500]


async def test_ewms_request_is_taken_with_ewms_meaning(
    server: RunningServer, user: RestClient, tms: RestClient, served: Served, tmp_path: Any
) -> None:
    created = await user.request("POST", "/v1/workflows?dry_run=no", ewms_body())  # unknown: ignored
    served.check("POST", "/v1/workflows", created)
    wf, tfs = created["workflow"], created["taskforces"]
    assert wf["priority"] == 100 and all(tf["priority"] == 100 for tf in tfs)  # EWMS's intent
    by_location = {tf["cluster_location"]: tf for tf in tfs}
    assert by_location["local"]["collector"] is None and by_location["remote"]["collector"] == "remote-cm"
    assert all(tf["job_event_log_fpath"] == "" and tf["cluster_id"] is None for tf in tfs)
    pc, wc = tfs[0]["pilot_config"], tfs[0]["worker_config"]
    # environment values as EWMS's TMS writes them (str())
    assert pc["environment"] == {
        "EWMS_PILOT_TASK_TIMEOUT": "3600",
        "EWMS_PILOT_DUMP_TASK_OUTPUT": "True",
        "EWMS_PILOT_QUARANTINE_TIME": "1.5",
        "EWMS_PILOT_PREFETCH": "2",
    }
    assert pc["image_source"] == "auto"
    assert (wc["worker_memory"], wc["worker_disk"], wc["priority"]) == (536870912, 1073741824, 100)

    # and our TMS builds from it what EWMS meant: a bare number of bytes, submitted as whole M / K
    local = by_location["local"]["taskforce_uuid"]
    found = await take_starter(tms)
    served.check("GET", "/v1/tms/pending-starter/taskforces", found)
    assert found["taskforce"]["taskforce_uuid"] == local
    cfg = TmsConfig(
        server_url=server.url,
        token="x",
        schedd=SCHEDD,
        job_event_log_dir=str(tmp_path),
        pilot_image_cvmfs="/cvmfs/pilot",
        pilot_image_docker="docker://pilot",
    )
    spec, _ = build_spec(
        cfg,
        found["taskforce"],
        found["task_directive"],
        found["mqprofiles"],
        runner="apptainer",
        chirp="htcondor",
    )
    sub = spec.submit_dict
    assert (sub["request_memory"], sub["request_disk"], sub["priority"]) == ("512M", "1048576K", "100")
    assert sub["container_image"] == "/cvmfs/pilot:1.0.5"  # auto: the CVMFS image
    assert "EWMS_PILOT_DUMP_TASK_OUTPUT=True" in sub["environment"]
    assert pilot_image(cfg, {"image_source": "docker", "tag": "1.0.5"}) == "docker://pilot:1.0.5"


async def test_whole_objects_carry_documented_fields_only(
    server: RunningServer, user: RestClient, tms: RestClient, served: Served
) -> None:
    created = await user.request("POST", "/v1/workflows", ewms_body())
    wid = created["workflow"]["workflow_id"]
    tid = created["task_directives"][0]["task_id"]
    uuid = {tf["cluster_location"]: tf["taskforce_uuid"] for tf in created["taskforces"]}["local"]
    wf_fields, td_fields = served.fields("WorkflowObject"), served.fields("TaskDirectiveObject")
    tf_fields = served.fields("TaskforceObject")
    assert wf_fields == EWMS_WORKFLOW | {"owner", "notify_url"} and td_fields == EWMS_TASK_DIRECTIVE | {
        "owner",
        "secrets",
        "autoscale",
    }
    assert tf_fields == EWMS_TASKFORCE | OURS

    async def get(path: str, template: str) -> Any:
        body = await user.request("GET", path)
        served.check("GET", template, body)
        return body

    assert set(created["workflow"]) == wf_fields
    assert all(set(d) == td_fields for d in created["task_directives"])
    assert all(set(d) == tf_fields for d in created["taskforces"])
    assert set(await get(f"/v1/workflows/{wid}", "/v1/workflows/{workflow_id}")) == wf_fields
    assert set(await get(f"/v1/task-directives/{tid}", "/v1/task-directives/{task_id}")) == td_fields
    await wait_phase(user, uuid, "pending-starter")
    await take_starter(tms)
    await submit(tms, uuid)  # leased, then submitted: the bookkeeping has values now
    tf = await get(f"/v1/taskforces/{uuid}", "/v1/taskforces/{taskforce_uuid}")
    assert set(tf) == tf_fields and tf["job_event_log_fpath"] == "/var/log/ewms/tf.log"
    for kind, fields in (("workflows", wf_fields), ("task-directives", td_fields), ("taskforces", tf_fields)):
        page = await user.request("POST", f"/v1/query/{kind}", {"query": {"workflow_id": wid}})
        served.check("POST", f"/v1/query/{kind}", page)
        assert page[kind.replace("-", "_")] and all(set(d) == fields for d in page[kind.replace("-", "_")])
        no_bookkeeping(page)
    added = await user.request(
        "POST",
        f"/v1/task-directives/{tid}/actions/add-workers",
        {"cluster_location": "local", "n_workers": 1},
    )
    served.check("POST", "/v1/task-directives/{task_id}/actions/add-workers", added)
    assert set(added) == tf_fields
    await user.request("POST", f"/v1/workflows/{wid}/actions/abort")
    stopping = await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD})
    served.check("GET", "/v1/tms/pending-stopper/taskforces", stopping)
    assert stopping["taskforce_uuid"] == uuid and set(stopping) == tf_fields
    no_bookkeeping([created, tf, added, stopping])


@pytest.mark.parametrize(
    "kind,projection",
    [
        ("workflows", ["workflow_id"]),
        ("workflows", ["priority", "deactivated"]),
        ("task-directives", ["task_image", "task_env"]),
        ("taskforces", ["phase"]),
        ("taskforces", ["taskforce_uuid", "pilot_config.environment", "worker_config.worker_memory"]),
    ],
)
async def test_projected_query_pages_match_the_served_schema(
    user: RestClient, served: Served, kind: str, projection: list[str]
) -> None:
    created = await user.request("POST", "/v1/workflows", ewms_body())
    query = {"workflow_id": created["workflow"]["workflow_id"]}
    page = await user.request("POST", f"/v1/query/{kind}", {"query": query, "projection": projection})
    items = page[kind.replace("-", "_")]
    assert items and all(set(i) == {p.split(".")[0] for p in projection} for i in items)
    served.check("POST", f"/v1/query/{kind}", page)
    # the whole-object schema would refuse them: the check above is one that can fail
    component = {"workflows": "Workflow", "task-directives": "TaskDirective", "taskforces": "Taskforce"}[kind]
    whole = served.validator(f"/components/schemas/{component}Object")
    assert not whole.is_valid(items[0])


def test_query_items_mirror_the_objects_and_require_nothing() -> None:
    schema = OpenAPI()

    def required_anywhere(node: Any) -> bool:
        if isinstance(node, dict):
            return bool(node.get("required")) or any(required_anywhere(v) for v in node.values())
        return isinstance(node, list) and any(required_anywhere(v) for v in node)

    for comp in (
        "Workflow",
        "TaskDirective",
        "Taskforce",
        "PilotConfig",
        "WorkerConfig",
        "PhaseChangeLogEntry",
    ):
        whole = schema.schemas[comp if comp == "PhaseChangeLogEntry" else comp + "Object"]
        item = schema.schemas[comp + "QueryItem"]
        assert set(item["properties"]) == set(whole["properties"]), comp
        assert not required_anywhere(item) and required_anywhere(whole), comp


async def test_bookkeeping_cannot_be_filtered_or_projected(user: RestClient) -> None:
    await user.request("POST", "/v1/workflows", ewms_body())
    for kind, field in (
        ("workflows", "queues_revoked"),
        ("taskforces", "lease_until"),
        ("taskforces", "origin"),
    ):
        for body in ({"query": {field: {"$exists": True}}}, {"projection": [field]}):
            code, err = await error_of(user.request("POST", f"/v1/query/{kind}", body))
            assert code == 400 and field in err["error"], (kind, body, err)


@pytest.mark.parametrize(
    "value,code",
    [(None, 400), ({"a": 1}, 400), ([1, 2], 400), (0, 200), (-2.5, 200), (False, 200), ("x", 200)],
)
async def test_environment_value_types(user: RestClient, value: Any, code: int) -> None:
    body = ewms_body()
    body["tasks"][0]["pilot_config"]["environment"] = {"EWMS_PILOT_X": value}
    if code == 400:
        status, err = await error_of(user.request("POST", "/v1/workflows", body))
        assert status == 400 and "pilot_config.environment" in err["error"]
    else:
        tf = (await user.request("POST", "/v1/workflows", body))["taskforces"][0]
        assert tf["pilot_config"]["environment"] == {"EWMS_PILOT_X": str(value)}


@pytest.mark.parametrize(
    "where,field,value,ok",
    [
        ("workflow", "priority", 100, True),
        ("workflow", "priority", 10**6, True),
        ("workflow", "priority", -1, False),
        ("worker", "priority", 101, True),
        ("worker", "priority", -5, False),
        ("worker", "worker_memory", 0, False),  # below 1M
        ("worker", "worker_memory", 2 << 30, True),  # bytes: 2 GiB
        ("worker", "worker_memory", 2048, False),  # 2 KiB: below 1M
        ("worker", "worker_disk", 2**70, False),
        ("worker", "worker_disk", 1.5, False),  # a number that is no integer: not EWMS's form
    ],
)
async def test_priorities_and_integer_sizes(
    user: RestClient, where: str, field: str, value: Any, ok: bool
) -> None:
    body = ewms_body()
    (body if where == "workflow" else body["tasks"][0]["worker_config"])[field] = value
    if not ok:
        status, err = await error_of(user.request("POST", "/v1/workflows", body))
        assert status == 400 and field in err["error"], err
        return
    created = await user.request("POST", "/v1/workflows", body)
    got = created["workflow"] if where == "workflow" else created["taskforces"][0]["worker_config"]
    assert got[field] == (min(value, 100) if field == "priority" else value)


async def test_unknown_query_parameters_are_ignored(user: RestClient, tms: RestClient) -> None:
    created = await user.request("POST", "/v1/workflows", ewms_body())
    wid = created["workflow"]["workflow_id"]
    assert (await user.request("GET", f"/v1/workflows/{wid}", {"fields": "all"}))["workflow_id"] == wid
    # EWMS's TMS sends the deprecated collector with the schedd
    assert (
        await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD, "collector": "cm"})
        == {}
    )
    assert await tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD, "x": "1"}) == {}
    # a known one is still checked
    code, err = await error_of(
        tms.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": "", "x": "1"})
    )
    assert code == 400 and "query.schedd" in err["error"]


async def test_mqs_path_serves_the_public_profiles(
    server: RunningServer, user: RestClient, user_b: RestClient, tms: RestClient, served: Served
) -> None:
    created = await user.request("POST", "/v1/workflows", ewms_body())
    wid = created["workflow"]["workflow_id"]
    await wait_phase(user, created["taskforces"][0]["taskforce_uuid"], "pending-starter")  # queues made
    ours = await user.request("GET", f"/v1/workflows/{wid}/mq-profiles/public")
    mqs = await user.request("GET", f"/v1/mqs/workflows/{wid}/mq-profiles/public")
    served.check("GET", "/v1/mqs/workflows/{workflow_id}/mq-profiles/public", mqs)
    assert mqs == ours and sorted(p["alias"] for p in mqs["mqprofiles"]) == ["input-queue", "output-queue"]
    assert (await error_of(user_b.request("GET", f"/v1/mqs/workflows/{wid}/mq-profiles/public")))[0] == 404
    assert (await error_of(tms.request("GET", f"/v1/mqs/workflows/{wid}/mq-profiles/public")))[0] == 403


async def _fetch(server: RunningServer, path: str, body: Any = None) -> Any:
    return await AsyncHTTPClient().fetch(
        server.url + path,
        method="POST" if body is not None else "GET",
        body=None if body is None else json.dumps(body),
        headers={"Authorization": f"Bearer {server.token()}"},
        raise_error=False,
    )


async def test_error_text_is_in_the_status_line(server: RunningServer, user: RestClient) -> None:
    r = await _fetch(server, "/v1/workflows/WF-000000000000-0000-000000")
    error = json.loads(r.body)["error"]
    assert (r.code, r.reason) == (404, error) and error == "no workflow WF-000000000000-0000-000000"
    # line breaks, markup, non-ASCII and length: one bounded printable line
    body = {**ewms_body(), "bad\nfield <x> é": 1}
    r = await _fetch(server, "/v1/workflows", body)
    error = json.loads(r.body)["error"]
    assert r.code == 400 and "\n" in error
    assert r.reason == "unknown field(s): body.bad field &lt;x> ?"
    r = await _fetch(server, "/v1/task-directives/" + "T" * 70)
    assert r.code == 400 and r.reason == json.loads(r.body)["error"]
    long = await _fetch(server, "/v1/query/taskforces", {"query": {"x" * 300: 1}})
    assert long.code == 400 and len(long.reason) == 200 and long.reason.endswith("...")
    assert all(" " <= c <= "~" for c in long.reason)
    # what EWMS's client (rest_tools over requests) prints
    with pytest.raises(requests.HTTPError, match="404 Client Error: no workflow WF-000000000000-0000-000000"):
        await user.request("GET", "/v1/workflows/WF-000000000000-0000-000000")


async def test_deliberate_differences_hold_and_are_documented(
    user: RestClient, tms: RestClient, served: Served
) -> None:
    text = served.doc["info"]["description"]
    for words in (
        "own objects only",
        "priorities are 0-100",
        "submit-failed and cancelled",
        "no-ops answered 200",
    ):
        assert words in text
    tf_schema = served.doc["components"]["schemas"]["TaskforceObject"]["properties"]["phase"]
    assert {"submit-failed", "cancelled"} <= set(tf_schema["enum"]) and "deliberate" in tf_schema[
        "description"
    ]
    created = await user.request("POST", "/v1/workflows", ewms_body())
    wid, uuid = created["workflow"]["workflow_id"], created["taskforces"][0]["taskforce_uuid"]
    await wait_phase(user, uuid, "pending-starter")
    await take_starter(tms)
    await submit(tms, uuid, cluster_id=7)
    await submit(tms, uuid, cluster_id=7)  # a repeated report: a no-op
    first = await user.request("POST", f"/v1/workflows/{wid}/actions/abort")
    again = await user.request("POST", f"/v1/workflows/{wid}/actions/abort")
    assert (first["n_taskforces"], again["n_taskforces"]) == (2, 0)
    phases = {tf["phase"] for tf in (await user.request("POST", "/v1/query/taskforces", {}))["taskforces"]}
    assert phases == {"pending-stopper", "cancelled"}
