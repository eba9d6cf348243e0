"""RabbitMQ adapter against the real broker: queues, per-workflow isolation, revocation."""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import quote

import pika
import pika.exceptions
import pytest
import requests

from ewms_server.broker.base import BrokerUnavailable
from ewms_server.broker.rabbitmq import (
    SETTINGS_DOCS,
    RabbitMQBrokerAdapter,
    RabbitMQSettings,
    permission_regex,
    username_for,
)

from .conftest import broker_settings, connect, management_get

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)


# -- settings ------------------------------------------------------------------------------


def test_settings_defaults_derive_from_broker_url() -> None:
    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": "amqp://adm:pw@mq.example.org:5673/ewms"})
    assert s.management_url == "http://mq.example.org:15672"
    assert s.address_for_pilots == "amqp://mq.example.org:5673/ewms"
    assert s.vhost == "ewms"
    assert s.admin_auth == ("adm", "pw")
    assert s.queue_delete_grace_s == 86400
    assert "pw" not in repr(s)


def test_settings_reject_a_non_amqp_url() -> None:
    with pytest.raises(ValueError, match="EWMS_BROKER_URL"):
        RabbitMQSettings.from_env({"EWMS_BROKER_URL": "http://x:1/"})
    with pytest.raises(ValueError):
        RabbitMQSettings.from_env({})


def test_settings_docs_name_every_variable_read() -> None:
    import inspect

    from ewms_server.broker import rabbitmq

    read = set(re.findall(r'"(EWMS_BROKER_[A-Z_]+)"', inspect.getsource(RabbitMQSettings)))
    documented = {name for name, _default, _meaning in SETTINGS_DOCS}
    assert read == documented, rabbitmq.__name__


def test_permission_regex_matches_exactly_the_workflow_queues() -> None:
    rx = re.compile(permission_regex(["Q-a.1", "Q-b"]))
    for ok in ("Q-a.1", "Q-b", "Q-a.1.dead-letter", "Q-b.dead-letter"):
        assert rx.match(ok), ok
    for bad in ("Q-a", "Q-ax1", "Q-a.10", "xQ-b", "Q-b2", "Q-c", "amq.default", "", "Q-b.dead-letter2"):
        assert not rx.match(bad), bad


# -- activation ----------------------------------------------------------------------------


async def test_activation_declares_durable_quorum_queues_and_profiles(make_workflow) -> None:
    wf, access = await make_workflow(2)
    for mqid, a in access.items():
        assert a.mqid == mqid and a.broker_type == "rabbitmq"
        assert a.broker_address == f"amqp://{username_for(wf)}@127.0.0.1:5672/%2F"
        assert a.auth_token and len(a.auth_token) >= 32
        for name in (mqid, f"{mqid}.dead-letter"):
            q = (await asyncio.to_thread(management_get, f"/api/queues/%2F/{name}")).json()
            assert q["durable"] is True and q["type"] == "quorum", q
        q = (await asyncio.to_thread(management_get, f"/api/queues/%2F/{mqid}")).json()
        assert q["arguments"]["x-dead-letter-routing-key"] == f"{mqid}.dead-letter"
    assert len({a.auth_token for a in access.values()}) == 1  # one broker user per workflow


async def test_activation_is_idempotent_and_keeps_messages(adapter, make_workflow) -> None:
    wf, first = await make_workflow(1)
    (mqid,) = first

    def publish(a) -> None:  # type: ignore[no-untyped-def]
        conn = connect(a)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(mqid, "", b"kept", PERSISTENT)
        conn.close()

    await asyncio.to_thread(publish, first[mqid])
    again = await adapter.activate_workflow(wf, [mqid])  # e.g. re-run after a server crash

    def get(a) -> bytes | None:  # type: ignore[no-untyped-def]
        conn = connect(a)
        _m, _p, body = conn.channel().basic_get(mqid, auto_ack=True)
        conn.close()
        return body

    assert await asyncio.to_thread(get, again[mqid]) == b"kept"


# -- isolation and revocation --------------------------------------------------------------


def _refused(action) -> int:  # type: ignore[no-untyped-def]
    """Run `action`; return the AMQP reply code it was refused with (0 if it succeeded)."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code
    return 0


async def test_credentials_are_refused_on_another_workflows_queues(make_workflow) -> None:
    _wf_a, acc_a = await make_workflow(1)
    _wf_b, acc_b = await make_workflow(1)
    (qa,), (qb,) = acc_a, acc_b

    def check() -> dict[str, int]:
        conn = connect(acc_a[qa])
        results: dict[str, int] = {}

        def on_fresh_channel(name, fn) -> None:  # type: ignore[no-untyped-def]
            ch = conn.channel()
            ch.confirm_delivery()
            results[name] = _refused(lambda: fn(ch))

        on_fresh_channel("own publish", lambda ch: ch.basic_publish(qa, "", b"x", PERSISTENT))
        on_fresh_channel("own get", lambda ch: ch.basic_get(qa, auto_ack=True))
        on_fresh_channel("other publish", lambda ch: ch.basic_publish(qb, "", b"x"))
        on_fresh_channel("other via default exchange", lambda ch: ch.basic_publish("", qb, b"x"))
        on_fresh_channel("other get", lambda ch: ch.basic_get(qb))
        on_fresh_channel("other consume", lambda ch: ch.basic_consume(qb, lambda *a: None))
        on_fresh_channel("other dead-letter get", lambda ch: ch.basic_get(f"{qb}.dead-letter"))
        on_fresh_channel("other delete", lambda ch: ch.queue_delete(qb))
        on_fresh_channel("declare a new queue", lambda ch: ch.queue_declare("Q-intruder"))
        conn.close()
        return results

    results = await asyncio.to_thread(check)
    assert results.pop("own publish") == 0 and results.pop("own get") == 0
    assert results == {k: 403 for k in results}, results


async def test_revoked_credentials_stop_working(adapter, make_workflow) -> None:
    wf, acc = await make_workflow(1)
    (mqid,) = acc
    conn = await asyncio.to_thread(connect, acc[mqid])
    await adapter.deactivate_workflow(wf, [mqid])
    await adapter.deactivate_workflow(wf, [mqid])  # idempotent

    def existing_connection_is_closed() -> bool:
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                conn.process_data_events(0.2)
        except pika.exceptions.AMQPConnectionError:
            return True
        return False

    assert await asyncio.to_thread(existing_connection_is_closed)
    with pytest.raises(
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError)
    ):
        await asyncio.to_thread(connect, acc[mqid])
    # the queue outlives the credentials until delete_queues
    q = await asyncio.to_thread(management_get, f"/api/queues/%2F/{mqid}")
    assert q.status_code == 200


async def test_delete_queues_removes_queues_and_exchanges(adapter, make_workflow) -> None:
    wf, acc = await make_workflow(2)
    await adapter.deactivate_workflow(wf, list(acc))
    await adapter.delete_queues(wf, list(acc))
    await adapter.delete_queues(wf, list(acc))  # idempotent
    for mqid in acc:
        for path in (
            f"/api/queues/%2F/{mqid}",
            f"/api/queues/%2F/{mqid}.dead-letter",
            f"/api/exchanges/%2F/{mqid}",
        ):
            assert (await asyncio.to_thread(management_get, path)).status_code == 404, path


# -- broker down ---------------------------------------------------------------------------


async def test_unreachable_broker_raises_broker_unavailable_without_secrets() -> None:
    a = RabbitMQBrokerAdapter(
        RabbitMQSettings.from_env(
            {
                "EWMS_BROKER_URL": "amqp://admin:s3cret-pw@127.0.0.1:1/%2F",
                "EWMS_BROKER_MANAGEMENT_URL": "http://127.0.0.1:1",
                "EWMS_BROKER_TIMEOUT_S": "2",
            }
        )
    )
    try:
        for call in (
            a.activate_workflow("WF-x", ["Q-x"]),
            a.delete_queues("WF-x", ["Q-x"]),
            a.deactivate_workflow("WF-x", ["Q-x"]),
        ):
            with pytest.raises(BrokerUnavailable) as info:
                await call
            assert "s3cret-pw" not in str(info.value)
    finally:
        await a.close()


async def test_a_dropped_admin_connection_is_replaced(adapter, make_workflow) -> None:
    await make_workflow(1)
    assert adapter._connection is not None and adapter._connection.is_open

    def drop_admin_connections() -> int:  # as the broker does with a missed heartbeat
        deadline = time.monotonic() + 15  # the management API lists connections lazily
        names: list[str] = []
        while not names and time.monotonic() < deadline:
            names = [
                c["name"]
                for c in management_get("/api/connections").json()
                if c.get("client_properties", {}).get("connection_name") == adapter.connection_name
            ]
            time.sleep(0.5)
        s = broker_settings()
        for name in names:
            requests.delete(
                f"{s.management_url}/api/connections/{quote(name, safe='')}", auth=s.admin_auth, timeout=10
            )
        return len(names)

    assert await asyncio.to_thread(drop_admin_connections) >= 1
    await make_workflow(1)  # reconnects once instead of failing
