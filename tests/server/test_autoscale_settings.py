"""The autoscaling and fair-share settings: parsed once, every bad value a clear ConfigError."""

from __future__ import annotations

import pytest

from ewms_server.config import Config, ConfigError


def test_defaults_and_values() -> None:
    cfg = Config.from_env({})
    assert cfg.autoscale.user_max_workers == 0 and cfg.autoscale.share("anyone") == 1.0
    assert cfg.autoscale.location_max_workers == {}
    cfg = Config.from_env(
        {
            "EWMS_USER_MAX_WORKERS": "5",
            "EWMS_USER_SHARES": '{"alice": 2, "bob": 0.5}',
            "EWMS_LOCATION_MAX_WORKERS": '{"local": 6}',
            "EWMS_AUTOSCALE_IDLE_TIMEOUT_S": "4",
        }
    )
    a = cfg.autoscale
    assert (a.user_max_workers, a.share("alice"), a.share("bob"), a.share("carol")) == (5, 2.0, 0.5, 1.0)
    assert a.location_max_workers == {"local": 6}
    assert a.pilot_env()["EWMS_PILOT_TIMEOUT_QUEUE_INCOMING"] == "4"


@pytest.mark.parametrize(
    "name,value,says",
    [
        ("EWMS_USER_MAX_WORKERS", "-1", "must be >= 0"),
        ("EWMS_USER_MAX_WORKERS", "2.5", "whole number"),
        ("EWMS_USER_SHARES", "[1]", "JSON object"),
        ("EWMS_USER_SHARES", '{"alice": 0}', "positive number"),
        ("EWMS_USER_SHARES", '{"alice": true}', "positive number"),
        ("EWMS_USER_SHARES", "{nope", "not JSON"),
        ("EWMS_LOCATION_MAX_WORKERS", '{"local": 1.5}', "whole number"),
        ("EWMS_LOCATION_MAX_WORKERS", '{"local": -1}', "whole number"),
        ("EWMS_AUTOSCALE_TARGET_DRAIN_S", "0", "must be >= 1"),
        ("EWMS_AUTOSCALE_INTERVAL_S", "x", "expected a number"),
        ("EWMS_AUTOSCALE_MESSAGES_PER_WORKER", "0", "must be >= 1"),
    ],
)
def test_bad_values_are_named(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=name) as e:
        Config.from_env({name: value})
    assert says in str(e.value)
