"""RabbitMQ adapter against the real broker: vhosts, queues, policies, isolation, revocation."""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from ewms_server.broker.base import BrokerUnavailable, QueueAccess
from ewms_server.broker.rabbitmq import (
    SETTINGS_DOCS,
    RabbitMQBrokerAdapter,
    RabbitMQError,
    RabbitMQSettings,
    pilot_address,
    policy_definition,
    user_permissions,
    username_for,
    vhost_for,
)
from tests.conftest import BROKER_URL

from .conftest import admin_channel, broker_settings, connect, management_get

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
QUORUM = {"x-queue-type": "quorum"}  # all oms-mqclient declares


# -- settings ------------------------------------------------------------------------------


def test_settings_defaults_derive_from_broker_url() -> None:
    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": "amqp://adm:pw@mq.example.org:5673/"})
    assert s.management_url == "http://mq.example.org:15672"
    assert s.address_for_pilots == "amqp://mq.example.org:5673"
    assert s.admin_auth == ("adm", "pw")
    assert s.queue_delete_grace_s == 86400 and s.task_delivery_limit == 3
    assert "pw" not in repr(s)


def test_settings_reject_a_non_amqp_url() -> None:
    with pytest.raises(ValueError, match="EWMS_BROKER_URL"):
        RabbitMQSettings.from_env({"EWMS_BROKER_URL": "http://x:1/"})
    with pytest.raises(ValueError):
        RabbitMQSettings.from_env({})


def test_settings_docs_name_every_variable_read() -> None:
    import inspect

    read = set(re.findall(r'"(EWMS_BROKER_[A-Z_]+)"', inspect.getsource(RabbitMQSettings)))
    assert read == {name for name, _default, _meaning in SETTINGS_DOCS}


def test_pilot_address_is_what_mqclient_parses_or_amqps_for_tls() -> None:
    for base in ("amqp://mq.example.org:5672", "mq.example.org:5672", "amqp://mq.example.org:5672/%2F"):
        assert pilot_address(base, "ewms-WF-1", "ewms-WF-1") == "ewms-WF-1@mq.example.org:5672/ewms-WF-1"
    assert pilot_address("amqps://mq.example.org:5671", "u", "v") == "amqps://u@mq.example.org:5671/v"
    with pytest.raises(ValueError, match="EWMS_BROKER_ADDRESS_FOR_PILOTS"):
        pilot_address("http://mq.example.org", "u", "v")
    with pytest.raises(ValueError, match="EWMS_BROKER_ADDRESS_FOR_PILOTS"):
        RabbitMQBrokerAdapter(broker_settings(EWMS_BROKER_ADDRESS_FOR_PILOTS="https://x:1"))


def test_user_permissions_match_exactly_the_workflow_queues() -> None:
    perms = user_permissions(["Q-a.1", "Q-b"])
    for kind in ("configure", "read"):
        rx = re.compile(perms[kind])
        for ok in ("Q-a.1", "Q-b", "Q-a.1.dead-letter", "Q-b.dead-letter"):
            assert rx.match(ok), (kind, ok)
        for bad in ("Q-a", "Q-ax1", "Q-a.10", "xQ-b", "Q-b2", "Q-c", "amq.default", "", "Q-b.dead-letter2"):
            assert not rx.match(bad), (kind, bad)
    write = re.compile(perms["write"])
    assert write.match("amq.default")
    for bad in ("Q-a.1", "Q-b", "amq.direct", "amq.fanout", "amq.defaultx", "xamq.default", ""):
        assert not write.match(bad), bad


# -- activation ----------------------------------------------------------------------------


async def test_activation_makes_a_vhost_of_quorum_queues_with_policies(make_workflow) -> None:
    wf, access = await make_workflow(2)
    vhost, user = vhost_for(wf), username_for(wf)
    for mqid, a in access.items():
        assert a.mqid == mqid and a.broker_type == "rabbitmq"
        assert a.broker_address == f"{user}@127.0.0.1:5672/{vhost}"
        assert a.auth_token and len(a.auth_token) >= 32
        for name in (mqid, f"{mqid}.dead-letter"):
            q = (await asyncio.to_thread(management_get, f"/api/queues/{vhost}/{name}")).json()
            assert q["durable"] is True and q["type"] == "quorum", q
            assert q["arguments"] == QUORUM  # what oms-mqclient declares, so it is accepted
    assert len({a.auth_token for a in access.values()}) == 1  # one broker user per workflow

    policies = (await asyncio.to_thread(management_get, f"/api/policies/{vhost}")).json()
    assert {p["name"]: (p["pattern"], p["apply-to"], p["definition"]) for p in policies} == {
        m: (f"^{re.escape(m)}$", "queues", policy_definition(m, 3)) for m in access
    }
    perms = (await asyncio.to_thread(management_get, f"/api/users/{user}/permissions")).json()
    assert [(p["vhost"], {k: p[k] for k in ("configure", "write", "read")}) for p in perms] == [
        (vhost, user_permissions(list(access)))
    ]  # in its own vhost, nowhere else


async def test_mqclient_style_declare_and_default_exchange_publish_work(make_workflow) -> None:
    _wf, access = await make_workflow(1)
    ((mqid, a),) = access.items()

    def mqclient_like() -> list[bytes | None]:
        conn = connect(a)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(mqid, durable=True, arguments=QUORUM)  # no 406: equivalent
        ch.queue_declare(f"{mqid}.dead-letter", durable=True, arguments=QUORUM)
        ch.basic_publish("", mqid, b"hello", PERSISTENT, mandatory=True)
        got = [ch.basic_get(mqid, auto_ack=True)[2] for _ in range(2)]
        conn.close()
        return got

    assert await asyncio.to_thread(mqclient_like) == [b"hello", None]


async def test_the_policy_dead_letters_a_message_past_the_delivery_limit(make_workflow) -> None:
    _wf, access = await make_workflow(1)
    ((mqid, a),) = access.items()

    def return_until_dead_lettered() -> tuple[list[int], bytes | None]:
        conn = connect(a)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", mqid, b"poison", PERSISTENT, mandatory=True)
        counts = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            method, props, _body = ch.basic_get(mqid)
            if method is None:
                if len(counts) > 3:
                    break
                time.sleep(0.05)
                continue
            counts.append(int((props.headers or {}).get("x-delivery-count", 0)))
            ch.basic_nack(method.delivery_tag, requeue=True)
        dead = None
        while dead is None and time.monotonic() < deadline:
            dead = ch.basic_get(f"{mqid}.dead-letter", auto_ack=True)[2]
        conn.close()
        return counts, dead

    counts, dead = await asyncio.to_thread(return_until_dead_lettered)
    assert counts == [0, 1, 2, 3]  # the limit (3) returns, then the dead-letter queue
    assert dead == b"poison"


async def test_activation_is_idempotent_and_keeps_messages(adapter, make_workflow) -> None:
    wf, first = await make_workflow(1)
    (mqid,) = first

    def publish(a: QueueAccess) -> None:
        conn = connect(a)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", mqid, b"kept", PERSISTENT, mandatory=True)
        conn.close()

    await asyncio.to_thread(publish, first[mqid])
    again = await adapter.activate_workflow(wf, [mqid])  # e.g. re-run after a server crash

    def get(a: QueueAccess) -> bytes | None:
        conn = connect(a)
        _m, _p, body = conn.channel().basic_get(mqid, auto_ack=True)
        conn.close()
        return body

    assert await asyncio.to_thread(get, again[mqid]) == b"kept"


async def test_reactivation_keeps_a_queue_redeclared_with_other_arguments(adapter, make_workflow) -> None:
    wf, access = await make_workflow(1)
    ((mqid, a),) = access.items()

    def redeclare() -> None:  # the user may configure its own queues
        conn = connect(a)
        ch = conn.channel()
        ch.queue_delete(mqid)
        ch.queue_declare(mqid, durable=True, arguments={**QUORUM, "x-max-length": 5})
        conn.close()

    await asyncio.to_thread(redeclare)
    await adapter.activate_workflow(wf, [mqid])
    q = (await asyncio.to_thread(management_get, f"/api/queues/{vhost_for(wf)}/{mqid}")).json()
    assert q["arguments"]["x-max-length"] == 5


# -- isolation and revocation --------------------------------------------------------------


def _refused(action) -> int:  # type: ignore[no-untyped-def]
    """Run `action`; return the AMQP reply code it was refused with (0 if it succeeded)."""
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code
    return 0


async def test_what_a_workflow_user_may_do_in_its_own_vhost(make_workflow) -> None:
    _wf, acc = await make_workflow(1)
    ((qa, a),) = acc.items()

    def check() -> dict[str, int]:
        conn = connect(a)
        results: dict[str, int] = {}

        def on_fresh_channel(name, fn) -> None:  # type: ignore[no-untyped-def]
            ch = conn.channel()
            ch.confirm_delivery()
            results[name] = _refused(lambda: fn(ch))

        on_fresh_channel("publish", lambda ch: ch.basic_publish("", qa, b"x", PERSISTENT, mandatory=True))
        on_fresh_channel("get", lambda ch: ch.basic_get(qa, auto_ack=True))
        on_fresh_channel("get dead letters", lambda ch: ch.basic_get(f"{qa}.dead-letter"))
        on_fresh_channel("declare a new queue", lambda ch: ch.queue_declare("Q-intruder"))
        on_fresh_channel("declare an exchange", lambda ch: ch.exchange_declare("X-intruder"))
        on_fresh_channel("publish to amq.fanout", lambda ch: ch.basic_publish("amq.fanout", "", b"x"))
        on_fresh_channel("bind to amq.direct", lambda ch: ch.queue_bind(qa, "amq.direct", "k"))
        conn.close()
        return results

    results = await asyncio.to_thread(check)
    assert [results.pop(k) for k in ("publish", "get", "get dead letters")] == [0, 0, 0]
    assert results == {k: 403 for k in results}, results


async def test_credentials_cannot_reach_another_workflows_vhost(make_workflow) -> None:
    wf_a, acc_a = await make_workflow(1)
    _wf_b, acc_b = await make_workflow(1)
    a = next(iter(acc_a.values()))
    b = next(iter(acc_b.values()))
    assert a.broker_address and b.broker_address
    for other_vhost_address in (
        a.broker_address.rsplit("/", 1)[0] + "/" + b.broker_address.rsplit("/", 1)[1],
        a.broker_address.rsplit("/", 1)[0] + "/",  # the broker's default vhost
    ):
        intruder = QueueAccess(a.mqid, a.auth_token, a.broker_type, other_vhost_address)
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            await asyncio.to_thread(connect, intruder)
    assert username_for(wf_a) in a.broker_address  # (the right user, refused by vhost)


async def test_the_default_exchange_reaches_only_the_workflows_own_queues(make_workflow) -> None:
    _wf_a, acc_a = await make_workflow(1)
    wf_b, acc_b = await make_workflow(1)
    a = next(iter(acc_a.values()))
    (qb,) = acc_b

    def publish_to_other_queue_name() -> type[Exception] | None:
        conn = connect(a)
        ch = conn.channel()
        ch.confirm_delivery()
        try:
            ch.basic_publish("", qb, b"x", PERSISTENT, mandatory=True)
        except pika.exceptions.UnroutableError as e:
            return type(e)
        finally:
            conn.close()
        return None

    def depth(workflow_id: str, queue: str) -> int:
        ch = admin_channel(workflow_id)
        try:
            return int(ch.queue_declare(queue, passive=True).method.message_count)
        finally:
            ch.connection.close()

    assert await asyncio.to_thread(publish_to_other_queue_name) is pika.exceptions.UnroutableError
    assert await asyncio.to_thread(depth, wf_b, qb) == 0


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
    q = await asyncio.to_thread(management_get, f"/api/queues/{vhost_for(wf)}/{mqid}")
    assert q.status_code == 200


async def test_delete_queues_deletes_the_vhost(adapter, make_workflow) -> None:
    wf, acc = await make_workflow(2)
    await adapter.deactivate_workflow(wf, list(acc))
    await adapter.delete_queues(wf, list(acc))
    await adapter.delete_queues(wf, list(acc))  # idempotent
    vhost = vhost_for(wf)
    paths = [f"/api/vhosts/{vhost}", f"/api/policies/{vhost}"]
    paths += [f"/api/queues/{vhost}/{q}" for m in acc for q in (m, f"{m}.dead-letter")]
    for path in paths:
        assert (await asyncio.to_thread(management_get, path)).status_code == 404, path


# -- broker down or misconfigured ----------------------------------------------------------


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


async def test_refused_admin_credentials_are_an_error_not_a_transient_failure() -> None:
    user, _pw = broker_settings().admin_auth
    bad = BROKER_URL.replace(f"{user}:", f"{user}x:", 1) if f"{user}:" in BROKER_URL else BROKER_URL
    a = RabbitMQBrokerAdapter(broker_settings(EWMS_BROKER_URL=bad))
    wf = f"WF-test-refused-{time.monotonic_ns()}"
    try:
        with pytest.raises(RabbitMQError, match="401"):
            await a.activate_workflow(wf, ["Q-x"])
    finally:
        await a.close()
    assert (await asyncio.to_thread(management_get, f"/api/vhosts/{quote(vhost_for(wf))}")).status_code == 404
