"""Pilot settings from the environment, and the auth file checks."""

from __future__ import annotations

import json
import os

import pytest

from ewms_pilot.config import SECRET_VARS, ConfigError, PilotConfig, load_auth, queue_auth

BASE = {
    "EWMS_PILOT_TASK_IMAGE": "img",
    "EWMS_PILOT_QUEUE_INCOMING": "Q-a, Q-b",
    "EWMS_PILOT_QUEUE_AUTH_FILE": "/x",
    "EWMS_PILOT_CHIRP": "none",
}


def test_defaults() -> None:
    c = PilotConfig.from_env(BASE)
    assert c.queues_in == ("Q-a", "Q-b") and c.queues_out == ()
    assert c.runner == "apptainer" and c.max_concurrent_tasks == 1 and c.prefetch == 1
    assert c.timeout_incoming == 60 and c.timeout_first_message == 60
    assert c.task_timeout is None and c.init is None
    assert c.task_mode == "per-message" and c.warm_start_timeout == 600


def test_warm_mode_is_chosen_per_task() -> None:
    c = PilotConfig.from_env(BASE | {"EWMS_PILOT_TASK_MODE": "warm", "EWMS_PILOT_WARM_START_TIMEOUT": "90"})
    assert c.task_mode == "warm" and c.warm_start_timeout == 90


def test_prefetch_and_first_message_timeout_follow_their_defaults() -> None:
    c = PilotConfig.from_env(
        BASE | {"EWMS_PILOT_MAX_CONCURRENT_TASKS": "4", "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "7"}
    )
    assert c.prefetch == 4 and c.timeout_first_message == 7


@pytest.mark.parametrize(
    "override, message",
    [
        ({"EWMS_PILOT_TASK_IMAGE": ""}, "EWMS_PILOT_TASK_IMAGE is required"),
        ({"EWMS_PILOT_RUNNER": "podman"}, "EWMS_PILOT_RUNNER must be one of"),
        ({"EWMS_PILOT_TASK_MODE": "hot"}, "EWMS_PILOT_TASK_MODE must be one of per-message, warm"),
        ({"EWMS_PILOT_WARM_START_TIMEOUT": "0"}, "EWMS_PILOT_WARM_START_TIMEOUT must be >= 1"),
        ({"EWMS_PILOT_PREFETCH": "0"}, "EWMS_PILOT_PREFETCH must be >= 1"),
        ({"EWMS_PILOT_TASK_TIMEOUT": "soon"}, "must be a float"),
        ({"EWMS_PILOT_TASK_ENV_JSON": "[1]"}, "must be a JSON object"),
        ({"EWMS_PILOT_CHIRP": "file"}, "EWMS_PILOT_CHIRP_FILE is required"),
    ],
)
def test_bad_settings_are_named(override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PilotConfig.from_env(BASE | override)


def write(path, content: str, mode: int) -> str:  # type: ignore[no-untyped-def]
    path.write_text(content)
    os.chmod(path, mode)
    return str(path)


def test_auth_file_must_be_private_and_complete(tmp_path) -> None:  # type: ignore
    entry = {"auth_token": "secret-token", "broker_type": "rabbitmq", "broker_address": "amqp://u@h:5672/%2F"}
    ok = write(tmp_path / "ok", json.dumps({"Q-a": entry}), 0o600)
    assert load_auth(ok, ("Q-a",))["Q-a"].auth_token == "secret-token"
    assert "secret-token" not in repr(load_auth(ok, ("Q-a",)))
    for mode in (0o640, 0o604, 0o660):
        with pytest.raises(ConfigError, match="owner only"):
            load_auth(write(tmp_path / f"m{mode:o}", json.dumps({"Q-a": entry}), mode), ("Q-a",))
    with pytest.raises(ConfigError, match="no complete entry for Q-b"):
        load_auth(ok, ("Q-a", "Q-b"))
    bad = write(tmp_path / "bad", '{"Q-a": {"auth_token": "secret-token"', 0o600)
    with pytest.raises(ConfigError) as info:
        load_auth(bad, ("Q-a",))
    assert "secret-token" not in str(info.value)


EWMS_ENV = {  # what EWMS's TMS puts in the job environment (lists joined with ';')
    "EWMS_PILOT_TASK_IMAGE": "img",
    "EWMS_PILOT_CHIRP": "none",
    "EWMS_PILOT_QUEUE_INCOMING": "Q-a;Q-b",
    "EWMS_PILOT_QUEUE_INCOMING_AUTH_TOKEN": "tok-in",
    "EWMS_PILOT_QUEUE_INCOMING_BROKER_TYPE": "rabbitmq",
    "EWMS_PILOT_QUEUE_INCOMING_BROKER_ADDRESS": "u@h:5672/v1;u@h:5672/v2",
    "EWMS_PILOT_QUEUE_OUTGOING": "Q-c",
    "EWMS_PILOT_QUEUE_OUTGOING_AUTH_TOKEN": "tok-out",
    "EWMS_PILOT_QUEUE_OUTGOING_BROKER_TYPE": "rabbitmq",
    "EWMS_PILOT_QUEUE_OUTGOING_BROKER_ADDRESS": "amqps://u@h:5671/v3",
}


def test_ewms_job_environment_gives_the_queue_credentials() -> None:
    c = PilotConfig.from_env(EWMS_ENV)
    assert c.auth_file is None and c.queues_in == ("Q-a", "Q-b") and c.queues_out == ("Q-c",)
    auth = queue_auth(c, EWMS_ENV)
    assert {m: (a.auth_token, a.broker_type, a.broker_address) for m, a in auth.items()} == {
        "Q-a": ("tok-in", "rabbitmq", "u@h:5672/v1"),
        "Q-b": ("tok-in", "rabbitmq", "u@h:5672/v2"),
        "Q-c": ("tok-out", "rabbitmq", "amqps://u@h:5671/v3"),
    }
    assert set(SECRET_VARS) == {
        "EWMS_PILOT_QUEUE_INCOMING_AUTH_TOKEN",
        "EWMS_PILOT_QUEUE_OUTGOING_AUTH_TOKEN",
    }


@pytest.mark.parametrize(
    "override, message",
    [
        ({"EWMS_PILOT_QUEUE_INCOMING_BROKER_ADDRESS": "a;b;c"}, "BROKER_ADDRESS has 3 values for 2 queues"),
        ({"EWMS_PILOT_QUEUE_OUTGOING_BROKER_TYPE": ""}, "OUTGOING_BROKER_TYPE is required"),
        ({"EWMS_PILOT_QUEUE_INCOMING_AUTH_TOKEN": "secret-token;"}, "INCOMING_AUTH_TOKEN is required"),
    ],
)
def test_incomplete_ewms_job_environment_is_named(override: dict[str, str], message: str) -> None:
    env = EWMS_ENV | override
    with pytest.raises(ConfigError, match=message) as info:
        queue_auth(PilotConfig.from_env(env), env)
    assert "secret-token" not in str(info.value)


def test_without_auth_file_or_ewms_tokens_the_auth_file_is_required() -> None:
    with pytest.raises(ConfigError, match="EWMS_PILOT_QUEUE_AUTH_FILE is required"):
        PilotConfig.from_env({k: v for k, v in BASE.items() if k != "EWMS_PILOT_QUEUE_AUTH_FILE"})


def test_message_format_defaults_to_the_envelope() -> None:
    assert PilotConfig.from_env(BASE).message_format == "envelope"
    assert PilotConfig.from_env(BASE | {"EWMS_PILOT_MESSAGE_FORMAT": "raw"}).message_format == "raw"
    with pytest.raises(ConfigError, match="EWMS_PILOT_MESSAGE_FORMAT must be one of envelope, raw"):
        PilotConfig.from_env(BASE | {"EWMS_PILOT_MESSAGE_FORMAT": "pickle"})
