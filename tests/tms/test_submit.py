"""Taskforce -> submit description, checked with the real htcondor2.Submit."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from typing import Any

import htcondor2
import pytest

from tms.submit import InvalidTaskforce, build_spec, format_environment, prepare_job_dir

from .conftest import SECRET_TOKEN, make_cfg, pending


def test_submit_description_is_complete_and_secret_free(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path, site_requirements="HAS_CVMFS_icecube_opensciencegrid_org")
    p = pending(n_workers=3, condor_requirements="has_avx2")
    spec, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="apptainer", chirp="htcondor"
    )
    sub = htcondor2.Submit(spec.submit_dict)
    text = str(sub)
    assert sub["universe"] == "container"
    assert sub["container_image"] == "/cvmfs/pilot:1.2.3"
    assert sub["requirements"] == "(HAS_CVMFS_icecube_opensciencegrid_org) && (has_avx2)"
    assert (sub["request_cpus"], sub["request_memory"], sub["request_disk"]) == ("1", "512M", "1048576K")
    assert sub["priority"] == "50"
    assert sub["allowed_execute_duration"] == "600"
    assert sub["MY.EWMSTaskforceUUID"] == '"TF-0001"'
    assert sub["log"] == os.path.join(cfg.job_event_log_dir, "TF-0001", "job-events.log")
    assert "EWMS_PILOT_QUEUE_AUTH_FILE=pilot-queue-auth.json" in sub["environment"]
    assert "EWMS_PILOT_TASK_ARGS='hello ''big world'''" in sub["environment"]
    assert "EWMS_PILOT_PREFETCH=2" in sub["environment"]
    assert sub["transfer_input_files"].endswith("pilot-queue-auth.json")
    assert SECRET_TOKEN not in text and SECRET_TOKEN not in json.dumps(spec.environment)
    assert secrets == {
        "MQ-in": {
            "auth_token": SECRET_TOKEN,
            "broker_type": "rabbitmq",
            "broker_address": "amqp://127.0.0.1",
        },
        "MQ-out": {
            "auth_token": SECRET_TOKEN + "-out",
            "broker_type": "rabbitmq",
            "broker_address": "amqp://127.0.0.1",
        },
    }
    assert spec.memory_bytes == 512 << 20 and spec.n_workers == 3


def test_auth_file_is_owner_only(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path)
    p = pending()
    spec, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="process", chirp="file"
    )
    os.umask(0o022)
    path = prepare_job_dir(spec, secrets)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(spec.job_dir).st_mode) == 0o700
    with open(path) as f:
        assert json.load(f) == secrets
    assert spec.environment["EWMS_PILOT_QUEUE_AUTH_FILE"] == path


def test_null_broker_profiles_and_bad_input(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path)
    p = pending()
    for mq in p["mqprofiles"]:
        mq.update(auth_token=None, broker_type=None, broker_address=None)
    _, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="process", chirp="file"
    )
    assert secrets["MQ-in"] == {"auth_token": None, "broker_type": None, "broker_address": None}
    with pytest.raises(InvalidTaskforce):
        build_spec(
            cfg, p["taskforce"], p["task_directive"], p["mqprofiles"][:1], runner="process", chirp="file"
        )
    bad = pending(uuid="../etc")
    with pytest.raises(InvalidTaskforce):
        build_spec(
            cfg, bad["taskforce"], bad["task_directive"], bad["mqprofiles"], runner="process", chirp="file"
        )


def test_environment_quoting() -> None:
    assert (
        format_environment({"A": "1", "B": "x y", "C": 'q"t', "D": "it's", "E": ""})
        == "\"A=1 B='x y' C=q\"\"t D='it''s' E=''\""
    )


def test_user_text_cannot_change_the_submit_description(tmp_path: Any, monkeypatch: Any) -> None:
    """A line break would start a new submit command; '$ENV(...)' would expand to the TMS's
    own environment (its token). What reaches htcondor2.Submit expands to exactly itself."""
    monkeypatch.setenv("EWMS_TMS_TOKEN", "tms-token-SECRET")
    cfg = make_cfg(tmp_path, site_requirements="HAS_SINGULARITY")
    p = pending(condor_requirements='Name =!= "a$b" && Memory > 0')
    p["task_directive"]["task_args"] = "--price 5$ --home $HOME it's"
    spec, _ = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="apptainer", chirp="htcondor"
    )
    sub = htcondor2.Submit(spec.submit_dict)
    for key, value in spec.submit_dict.items():
        if value and "$(ProcId)" not in value:
            assert sub.expand(key.replace("+", "MY.")) == value, key
    assert "EWMS_PILOT_TASK_ARGS='--price 5$ --home $HOME it''s'" in sub.expand("environment")
    assert sub.expand("requirements") == '(HAS_SINGULARITY) && (Name isnt "a$b" && Memory > 0)'

    for where, field, value, message in (
        ("task_directive", "task_args", "x\n+Requirements = true", "line break"),
        ("task_directive", "task_args", "--token $ENV(EWMS_TMS_TOKEN)", "macro"),
        ("task_directive", "task_image", "$(executable)", "macro"),
        ("task_directive", "task_env", {"A": "$$(Memory)"}, "macro"),
        ("task_directive", "task_image", "/bin/true\0", "NUL"),
    ):
        bad = pending()
        bad[where][field] = value
        with pytest.raises(InvalidTaskforce, match=message):
            build_spec(
                cfg,
                bad["taskforce"],
                bad["task_directive"],
                bad["mqprofiles"],
                runner="apptainer",
                chirp="htcondor",
            )


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda tf: tf["worker_config"].update(condor_requirements="false) || (true"), "ClassAd expression"),
        (lambda tf: tf["worker_config"].update(condor_requirements='Name == "$ENV(X)"'), "macro"),
        (lambda tf: tf["pilot_config"].update(input_files=["/etc/passwd"]), "not a URL"),
        (lambda tf: tf["pilot_config"].update(input_files=["file:///etc/passwd"]), "not allowed"),
        (lambda tf: tf["pilot_config"].update(input_files=["https://x/a,/etc/passwd"]), "comma"),
        (lambda tf: tf["pilot_config"]["environment"].update({"A=B": "1"}), "environment name"),
        (lambda tf: tf["pilot_config"]["environment"].update({"A": "x\ny"}), "line break"),
        (lambda tf: tf["worker_config"].update(worker_memory="lots"), "not a size"),
        (lambda tf: tf["worker_config"].update(n_cores="many"), "not an integer"),
        (lambda tf: tf.update(n_workers=0), "n_workers must be >= 1"),
    ],
)
def test_what_no_backend_can_start_is_an_invalid_taskforce(tmp_path: Any, change: Any, message: str) -> None:
    cfg = make_cfg(tmp_path)
    p = pending()
    change(p["taskforce"])
    with pytest.raises(InvalidTaskforce, match=message):
        build_spec(
            cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="apptainer", chirp="htcondor"
        )


def test_input_file_urls_are_transferred(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path)
    p = pending()
    p["taskforce"]["pilot_config"]["input_files"] = ["https://example.org/a.tar", "osdf:///ospool/x/y"]
    spec, _ = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="apptainer", chirp="htcondor"
    )
    files = htcondor2.Submit(spec.submit_dict)["transfer_input_files"].split(",")
    assert files[1:] == ["https://example.org/a.tar", "osdf:///ospool/x/y"]
    assert files[0].endswith("pilot-queue-auth.json")


def _build(cfg: Any, p: dict[str, Any], runner: str = "process", **kw: Any) -> Any:
    chirp = "file" if runner == "process" else "htcondor"
    return build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner=runner, chirp=chirp, **kw
    )


def test_a_task_naming_secrets_gets_the_fetch_entry_in_its_auth_file_only(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path)
    p = pending()
    p["task_directive"]["secrets"] = ["DB_PASSWORD"]
    fetch_token = "TF-0001.signature-of-the-server"
    for url_for_pilots, expected in (
        ("", cfg.server_url),
        ("https://ewms.example.org", "https://ewms.example.org"),
    ):
        c = dataclasses.replace(cfg, server_url_for_pilots=url_for_pilots)
        spec, payload = _build(c, p, "apptainer", secrets_fetch_token=fetch_token)
        assert payload["ewms_secrets"] == {"url": f"{expected}/v1/pilot/secrets", "token": fetch_token}
        assert set(payload) == {"MQ-in", "MQ-out", "ewms_secrets"}
        assert fetch_token not in json.dumps(spec.submit_dict) and fetch_token not in json.dumps(
            spec.environment
        )
    # no token from the server (no EWMS_SECRETS_KEY there): a failed submit, never a run without them
    with pytest.raises(InvalidTaskforce, match="EWMS_SECRETS_KEY"):
        _build(cfg, p)
    # a task naming none gets no entry, even if a token came along
    p["task_directive"]["secrets"] = []
    assert "ewms_secrets" not in _build(cfg, p, secrets_fetch_token="x")[1]
