"""Broker addresses as our server serves them, as oms-mqclient writes them, and as they were."""

from __future__ import annotations

import pika
import pytest

from ewms_pilot.broker import connection_url


@pytest.mark.parametrize(
    "address, url",
    [
        ("ewms-WF-1@mq.example.org:5672/ewms-WF-1", "amqp://ewms-WF-1:t%2Fk@mq.example.org:5672/ewms-WF-1"),
        ("u@mq.example.org/v", "amqp://u:t%2Fk@mq.example.org/v"),
        ("u@mq.example.org:5672", "amqp://u:t%2Fk@mq.example.org:5672"),
        ("amqp://u@mq.example.org:5672/%2F", "amqp://u:t%2Fk@mq.example.org:5672/%2F"),
        ("amqps://u@mq.example.org:5671/v", "amqps://u:t%2Fk@mq.example.org:5671/v"),
    ],
)
def test_connection_url_accepts_the_mqclient_form_and_amqp_urls(address: str, url: str) -> None:
    assert connection_url(address, "t/k") == url


def test_the_vhost_of_each_form_reaches_pika_as_meant() -> None:
    assert pika.URLParameters(connection_url("u@h:1/ewms-WF-1", "t")).virtual_host == "ewms-WF-1"
    assert pika.URLParameters(connection_url("amqp://u@h:1/%2F", "t")).virtual_host == "/"
    assert pika.URLParameters(connection_url("u@h:1", "t")).virtual_host == "/"
    params = pika.URLParameters(connection_url("amqps://u@h:5671/v", "t"))
    assert params.ssl_options is not None and params.credentials.password == "t"  # type: ignore[attr-defined]


@pytest.mark.parametrize("address", ["h:5672/v", "http://u@h/v", "u@:5672/v", "u@h:port/v", ""])
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError, match="broker_address must look like"):
        connection_url(address, "secret")
