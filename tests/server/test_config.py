"""Config parsing (pure)."""

from __future__ import annotations

import socket

import pytest

from ewms_server.config import Config, ConfigError, Location, parse_locations


def test_defaults() -> None:
    cfg = Config.from_env({})
    assert (cfg.rest_host, cfg.rest_port, cfg.mongodb_url) == ("127.0.0.1", 8080, None)
    assert cfg.cluster_locations == {"local": Location(socket.gethostname(), "")}
    assert not cfg.auth_configured and not cfg.dev_mode


def test_locations_forms() -> None:
    assert parse_locations('{"a": "s1", "b": {"schedd": "s2", "collector": "c"}}') == {
        "a": Location("s1", ""),
        "b": Location("s2", "c"),
    }
    for bad in ("nope", "{}", '{"a": ""}', '{"a": 5}'):
        with pytest.raises(ConfigError):
            parse_locations(bad)


def test_numbers_are_checked() -> None:
    with pytest.raises(ConfigError, match="EWMS_MAX_SUBMIT_ATTEMPTS"):
        Config.from_env({"EWMS_MAX_SUBMIT_ATTEMPTS": "0"})
    assert Config.from_env({"EWMS_STARTER_LEASE_S": "2.5"}).starter_lease_s == 2.5


def test_config_is_frozen() -> None:
    cfg = Config.from_env({})
    with pytest.raises(AttributeError):
        cfg.rest_port = 1  # type: ignore[misc]
