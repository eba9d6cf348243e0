"""Fixtures for the RabbitMQ adapter tests: a real broker (EWMS_BROKER_URL or the local one)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pika
import pika.exceptions
import pytest
import requests

from ewms_pilot.broker import connection_url
from ewms_server.broker.base import QueueAccess
from ewms_server.broker.rabbitmq import RabbitMQBrokerAdapter, RabbitMQSettings, vhost_for
from tests.conftest import BROKER_URL


def broker_settings(**overrides: str) -> RabbitMQSettings:
    return RabbitMQSettings.from_env({"EWMS_BROKER_URL": BROKER_URL, **overrides})


def management_get(path: str) -> requests.Response:
    s = broker_settings()
    return requests.get(s.management_url + path, auth=s.admin_auth, timeout=10)


def admin_channel(workflow_id: str) -> pika.adapters.blocking_connection.BlockingChannel:
    """The admin user in a workflow's vhost (to look at queues the way the broker sees them)."""
    params = pika.URLParameters(BROKER_URL)
    params.virtual_host = vhost_for(workflow_id)
    return pika.BlockingConnection(params).channel()


def connect(access: QueueAccess) -> pika.BlockingConnection:
    assert access.broker_address and access.auth_token
    return pika.BlockingConnection(
        pika.URLParameters(connection_url(access.broker_address, access.auth_token))
    )


def unique(prefix: str) -> str:
    return f"{prefix}-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def adapter() -> AsyncIterator[RabbitMQBrokerAdapter]:
    a = RabbitMQBrokerAdapter(broker_settings())
    yield a
    await a.close()


@pytest.fixture
async def make_workflow(
    adapter: RabbitMQBrokerAdapter,
) -> AsyncIterator[Callable[..., object]]:
    """Activates workflows with fresh ids; removes their users and queues afterwards."""
    made: list[tuple[str, list[str]]] = []

    async def make(n_queues: int = 2) -> tuple[str, dict[str, QueueAccess]]:
        wf = unique("WF")
        mqids = [unique("Q") for _ in range(n_queues)]
        made.append((wf, mqids))
        return wf, await adapter.activate_workflow(wf, mqids)

    yield make
    for wf, mqids in made:
        await adapter.deactivate_workflow(wf, mqids)
        await adapter.delete_queues(wf, mqids)
