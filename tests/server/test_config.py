"""Config parsing (pure)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from ewms_server.config import Config, ConfigError, Location, parse_locations, parse_networks


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


def test_http_and_auth_hardening_settings() -> None:
    cfg = Config.from_env({})
    assert (cfg.auth_schedds_claim, cfg.auth_allow_unscoped_tms) == ("ewms_schedds", False)
    assert (cfg.max_body_bytes, cfg.max_statuses_body_bytes) == (1024 * 1024, 16 * 1024 * 1024)
    assert (cfg.http_header_timeout_s, cfg.http_body_timeout_s, cfg.http_max_idle_connections) == (
        60,
        60,
        512,
    )
    assert cfg.trusted_proxies == ()
    assert parse_networks("10.0.0.1, 192.168.0.0/16 ::1") == (
        ipaddress.ip_network("10.0.0.1/32"),
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("::1/128"),
    )
    with pytest.raises(ConfigError, match=r"EWMS_TRUSTED_PROXIES: 'proxy\.example' is not an address"):
        Config.from_env({"EWMS_TRUSTED_PROXIES": "10.0.0.1,proxy.example"})
    with pytest.raises(ConfigError, match="EWMS_AUTH_ALLOW_UNSCOPED_TMS"):
        Config.from_env({"EWMS_AUTH_ALLOW_UNSCOPED_TMS": "sure"})
