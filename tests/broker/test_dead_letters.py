"""Queue depths and dead-letter retry of the RabbitMQ adapter, against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pika
import pytest

from ewms_server.broker.base import QueueDepth, QueuesMissing
from ewms_server.broker.dead_letters import RETRIES_HEADER, republished_headers
from ewms_server.broker.null import NullBrokerAdapter
from ewms_server.broker.rabbitmq import RabbitMQBrokerAdapter, dead_letter_queue
from tests.conftest import wait_until

from .conftest import admin_channel, broker_settings, unique

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers={"mine": "kept"})


@pytest.fixture
async def limited() -> AsyncIterator[tuple[RabbitMQBrokerAdapter, str, list[str]]]:
    """An adapter with delivery limit 1 and one activated workflow of two queues."""
    a = RabbitMQBrokerAdapter(broker_settings(EWMS_BROKER_TASK_DELIVERY_LIMIT="1"))
    wf, mqids = unique("WF"), [unique("Q"), unique("Q")]
    await a.activate_workflow(wf, mqids)
    try:
        yield a, wf, mqids
    finally:
        await a.deactivate_workflow(wf, mqids)
        await a.delete_queues(wf, mqids)
        await a.close()


def dead_letter(wf: str, queue: str, bodies: list[bytes]) -> None:
    """Publish `bodies` to `queue`, then fail each delivery until the broker dead-letters them."""
    ch = admin_channel(wf)
    try:
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, PERSISTENT, mandatory=True)
        deadline = time.monotonic() + 30
        while ch.queue_declare(dead_letter_queue(queue), passive=True).method.message_count < len(bodies):
            assert time.monotonic() < deadline, "messages were not dead-lettered"
            method, _, _ = ch.basic_get(queue)
            if method is not None:
                ch.basic_nack(method.delivery_tag, requeue=True)
            else:
                time.sleep(0.05)
    finally:
        ch.connection.close()


def depth(wf: str, queue: str) -> int:
    ch = admin_channel(wf)
    try:
        return int(ch.queue_declare(queue, passive=True).method.message_count)
    finally:
        ch.connection.close()


async def test_queue_depths_count_ready_unacked_and_dead_letters(
    limited: tuple[RabbitMQBrokerAdapter, str, list[str]],
) -> None:
    a, wf, (q1, q2) = limited
    await asyncio.to_thread(dead_letter, wf, q1, [b"bad-1", b"bad-2"])
    ch = await asyncio.to_thread(admin_channel, wf)
    try:
        ch.confirm_delivery()  # each publish is in the queue before the get
        for body in (b"a", b"b", b"c"):
            ch.basic_publish("", q2, body, PERSISTENT)
        held, _, _ = ch.basic_get(q2)  # one in flight: delivered, not acknowledged
        assert held is not None

        async def settled() -> dict[str, QueueDepth] | None:
            got = await a.queue_depths(wf, [q1, q2])
            want = {q1: QueueDepth(0, 0, 2), q2: QueueDepth(2, 1, 0)}
            return got if got == want else None

        await wait_until(settled, timeout=30, interval=0.25)
    finally:
        ch.connection.close()


async def test_retry_moves_dead_letters_back_once_each_and_bounded(
    limited: tuple[RabbitMQBrokerAdapter, str, list[str]],
) -> None:
    a, wf, (q1, q2) = limited
    bodies = [f"bad-{i}".encode() for i in range(3)]
    await asyncio.to_thread(dead_letter, wf, q1, bodies)
    assert await a.requeue_dead_letters(wf, [q1, q2], limit=2) == 2  # bounded per call
    assert await asyncio.to_thread(depth, wf, dead_letter_queue(q1)) == 1
    assert await a.requeue_dead_letters(wf, [q1, q2], limit=100) == 1
    assert await a.requeue_dead_letters(wf, [q1, q2], limit=100) == 0
    assert await asyncio.to_thread(depth, wf, dead_letter_queue(q1)) == 0
    ch = await asyncio.to_thread(admin_channel, wf)
    try:
        got, tags = [], []
        for _ in bodies:
            method, props, body = ch.basic_get(q1)
            assert method is not None
            got.append(body)
            tags.append(method.delivery_tag)
            # the broker's dead-lettering marks are gone, the message's own headers stay
            assert props.headers["mine"] == "kept" and props.headers[RETRIES_HEADER] == 1
            assert "x-death" not in props.headers
            assert not any(k.startswith(("x-first-death", "x-last-death")) for k in props.headers)
        assert sorted(got) == bodies
        for tag in tags:
            # a fresh delivery count: one failure (limit 1) returns it to the queue, not to
            # the dead letters
            ch.basic_nack(tag, requeue=True)
    finally:
        ch.connection.close()

    async def back_in_queue() -> bool:
        counts = [await asyncio.to_thread(depth, wf, q) for q in (q1, dead_letter_queue(q1))]
        return counts == [3, 0]

    await wait_until(back_in_queue, timeout=10, interval=0.25)


async def test_missing_queues_are_said_so() -> None:
    a = RabbitMQBrokerAdapter(broker_settings())
    try:
        wf = unique("WF")  # never activated: no vhost
        with pytest.raises(QueuesMissing):
            await a.queue_depths(wf, ["Q-x"])
        with pytest.raises(QueuesMissing):
            await a.requeue_dead_letters(wf, ["Q-x"], limit=10)
    finally:
        await a.close()


async def test_null_adapter_has_no_figures_and_nothing_to_retry() -> None:
    null = NullBrokerAdapter()
    with pytest.raises(Exception, match="no broker is configured"):
        await null.queue_depths("WF-1", ["Q-1"])
    assert await null.requeue_dead_letters("WF-1", ["Q-1"], limit=10) == 0


def test_republished_headers_count_retries_and_drop_broker_marks() -> None:
    once = republished_headers(
        {
            "x-death": [{"count": 1}],
            "x-delivery-count": 3,
            "x-first-death-queue": "Q",
            "x-last-death-reason": "delivery_limit",
            "app": 1,
        }
    )
    assert once == {"app": 1, RETRIES_HEADER: 1}
    assert republished_headers(once)[RETRIES_HEADER] == 2
    assert republished_headers(None) == {RETRIES_HEADER: 1}
