"""Issue 9, finding 2 at the API: what no backend can start is a 400 naming the field, and
nothing is stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ewms_server.config import Config, ConfigError
from ewms_server.testing import RunningServer
from tests.conftest import workflow_body
from tests.server.test_bad_input import raw, snapshot


def _task(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = workflow_body()
    body["tasks"][0].setdefault("pilot_config", {"environment": {}, "input_files": []})
    change(body["tasks"][0])
    return body


def _pc(**kw: Any) -> Callable[[dict[str, Any]], None]:
    return lambda t: t["pilot_config"].update(kw)


def _wc(**kw: Any) -> Callable[[dict[str, Any]], None]:
    return lambda t: t["worker_config"].update(kw)


def _set(**kw: Any) -> Callable[[dict[str, Any]], None]:
    return lambda t: t.update(kw)


REFUSED = [
    # input files: URLs of allowed schemes only (the access point reads local paths as the TMS)
    (_pc(input_files=["/var/lib/ewms-tms/jobs/TF-x/pilot-queue-auth.json"]), "pilot_config.input_files[0]"),
    (_pc(input_files=["https://ok.example/a", "file:///etc/shadow"]), "pilot_config.input_files[1]"),
    (_pc(input_files=["gopher://old.example/x"]), "pilot_config.input_files[0]"),
    (_pc(input_files=["https://x.example/a,/etc/passwd"]), "pilot_config.input_files[0]"),
    # requirements: one whole ClassAd expression
    (_wc(condor_requirements="false) || (true"), "worker_config.condor_requirements"),
    (_wc(condor_requirements="true] [x = 1"), "worker_config.condor_requirements"),
    (_wc(condor_requirements='Name == "$ENV(EWMS_TMS_TOKEN)"'), "worker_config.condor_requirements"),
    # text that would change the submit description
    (_set(task_args="x\n+Requirements = true"), "task_args"),
    (_set(task_args="--token $ENV(EWMS_TMS_TOKEN)"), "task_args"),
    (
        _pc(environment={"EWMS_PILOT_PREFETCH": "1\n+Evil = 1"}),
        "pilot_config.environment.EWMS_PILOT_PREFETCH",
    ),
    (_set(task_env={"A": "$(Cluster)"}), "task_env.A"),
    # what no process can start
    (_set(task_image="/bin/true\u0000"), "task_image"),
    (_set(init_image="x", init_args="\u0000"), "init_args"),
    (_set(task_env={"A=B": "1"}), "task_env"),
    (_set(task_env={"": "1"}), "task_env"),
    (_set(init_env={"X": "a\u0000b"}), "init_env.X"),
    (_pc(environment={"A B": "1"}), "pilot_config.environment"),
    # sizes no machine has
    (_wc(worker_memory="99999999999T"), "worker_config.worker_memory"),
    (_wc(worker_memory="0"), "worker_config.worker_memory"),
    (_wc(worker_disk="900T"), "worker_config.worker_disk"),
    (_wc(n_cores=1000), "worker_config.n_cores"),
]


@pytest.mark.parametrize("change,field", REFUSED)
async def test_refused_with_the_field_named(
    server: RunningServer, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    before = await snapshot(server)
    code, body = await raw(server, "POST", "/v1/workflows", _task(change))
    assert code == 400, body
    assert f"body.tasks[0].{field}" in body["error"], body
    assert await snapshot(server) == before


async def test_what_a_backend_can_start_is_accepted(server: RunningServer) -> None:
    def ok(t: dict[str, Any]) -> None:
        t["pilot_config"]["input_files"] = ["https://example.org/in.tar", "osdf:///ospool/ap40/x"]
        t["pilot_config"]["environment"] = {"EWMS_PILOT_PREFETCH": "2"}
        t["worker_config"].update(condor_requirements="HasAVX2 && Memory > 2048", worker_memory="2G")
        t.update(task_args="--price 5$ 'a b'", task_env={"my-var": "line1\nline2"})

    code, body = await raw(server, "POST", "/v1/workflows", _task(ok))
    assert code == 200, body
    tf = body["taskforces"][0]
    assert tf["worker_config"]["condor_requirements"] == "HasAVX2 && Memory > 2048"


def test_limits_are_settings() -> None:
    cfg = Config.from_env({"EWMS_INPUT_FILE_SCHEMES": "https, S3", "EWMS_MAX_WORKER_MEMORY": "64G"})
    assert cfg.job_limits.input_file_schemes == {"https", "s3"}
    assert cfg.job_limits.max_memory_bytes == 64 << 30
    for env, name in (
        ({"EWMS_INPUT_FILE_SCHEMES": "https,file"}, "EWMS_INPUT_FILE_SCHEMES"),
        ({"EWMS_MAX_WORKER_DISK": "lots"}, "EWMS_MAX_WORKER_DISK"),
        ({"EWMS_MAX_WORKER_CORES": "0"}, "EWMS_MAX_WORKER_CORES"),
    ):
        with pytest.raises(ConfigError, match=name):
            Config.from_env(env)
