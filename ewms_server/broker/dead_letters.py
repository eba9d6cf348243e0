"""Moving a workflow's dead-lettered messages back to their queues (RabbitMQ, over AMQP).

Blocking (pika's BlockingConnection): run it off the event loop. The admin user connects to
the workflow's vhost. Each message is taken from `<mqid>.dead-letter` unacknowledged,
republished to `<mqid>` through the default exchange with publisher confirms and `mandatory`,
and acknowledged on the dead-letter queue only once the broker confirmed the republish: a
crash in between leaves it in both (at least once), never in neither.

The broker's own dead-lettering headers are dropped on the way (`x-death`,
`x-first-death-*`, `x-last-death-*`, `x-delivery-count`): a quorum queue counts deliveries
itself and RabbitMQ 3.10 restarts the count for a republished message, but newer versions
read some of these headers (dead-letter cycle detection reads `x-death`), and a message
that kept them could be dropped or dead-lettered again at once. What remains of its history
is `x-ewms-dead-letter-retries`, the number of times it was moved back.
"""

from __future__ import annotations

import pika
import pika.exceptions

from .base import BrokerUnavailable, QueuesMissing

RETRIES_HEADER = "x-ewms-dead-letter-retries"
_BROKER_HEADERS = ("x-death", "x-delivery-count")
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")


def republished_headers(headers: dict[str, object] | None) -> dict[str, object]:
    """The headers a dead-lettered message is republished with (see the module docstring)."""
    out = {
        k: v
        for k, v in (headers or {}).items()
        if k not in _BROKER_HEADERS and not k.startswith(_BROKER_PREFIXES)
    }
    previous = out.get(RETRIES_HEADER)
    out[RETRIES_HEADER] = (previous if isinstance(previous, int) else 0) + 1
    return out


def _props(p: pika.BasicProperties) -> pika.BasicProperties:
    """The message's own properties, persistent; never `user_id` (RabbitMQ checks it against
    the publishing user, which is now the admin)."""
    return pika.BasicProperties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        headers=republished_headers(p.headers),
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=p.expiration,
        message_id=p.message_id,
        timestamp=p.timestamp,
        type=p.type,
        app_id=p.app_id,
    )


def requeue(params: pika.ConnectionParameters, pairs: list[tuple[str, str]], limit: int) -> int:
    """Move up to `limit` messages from each (dead-letter queue, queue) pair's first to its
    second; return how many moved in all."""
    try:
        conn = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAccessDeniedError as e:  # the vhost is gone (or never made)
        raise QueuesMissing(f"the workflow's queues are not on the broker ({type(e).__name__})") from None
    except pika.exceptions.AMQPConnectionError as e:
        raise BrokerUnavailable(f"RabbitMQ: cannot connect ({type(e).__name__})") from None
    moved = 0
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for dead_letter_queue, queue in pairs:
            while moved < limit:
                method, props, body = ch.basic_get(dead_letter_queue, auto_ack=False)
                if method is None:
                    break
                try:
                    ch.basic_publish("", queue, body, _props(props), mandatory=True)
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                    ch.basic_nack(method.delivery_tag, requeue=True)  # stays a dead letter
                    break
                ch.basic_ack(method.delivery_tag)
                moved += 1
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code == 404:
            raise QueuesMissing(f"a queue of the workflow is missing: {e.reply_text}") from None
        raise BrokerUnavailable(f"RabbitMQ closed the channel: {e.reply_code}") from None
    except pika.exceptions.AMQPError as e:
        raise BrokerUnavailable(f"RabbitMQ: {type(e).__name__} after moving {moved}") from None
    finally:
        if conn.is_open:
            conn.close()
    return moved
