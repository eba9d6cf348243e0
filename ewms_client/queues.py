"""Push task messages to, and pull results from, a workflow's queues (persistent, confirmed).

Messages are written and read in the queue's format (`ewms_pilot.envelope`): by default
oms-mqclient's envelope, so that `push` sends each payload as the text `data` and `pull` hands
over `data` (text, or JSON for non-strings), not the wrapper.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import pika
import pika.exceptions

from ewms_pilot.broker import connection_url
from ewms_pilot.envelope import MessageFormatError, unwrap, wrap

from .client import ClientError, QueueProfile

DEAD_LETTER_SUFFIX = ".dead-letter"


def _channel(profile: QueueProfile) -> pika.adapters.blocking_connection.BlockingChannel:
    if profile.broker_type != "rabbitmq" or not profile.broker_address or not profile.auth_token:
        raise ClientError(f"queue {profile.alias!r} has no usable broker profile")
    try:
        url = connection_url(profile.broker_address, profile.auth_token)
    except ValueError as e:
        raise ClientError(f"queue {profile.alias!r}: {e}") from None
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError):
        raise ClientError("the broker refused the queue credentials (workflow ended?)") from None
    except pika.exceptions.AMQPError as e:
        raise ClientError(f"cannot reach the broker: {type(e).__name__}") from None
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def push(profile: QueueProfile, messages: Iterable[bytes]) -> int:
    """Publish each message (the broker confirms each, and refuses it if the queue is gone);
    return how many were sent."""
    ch = _channel(profile)
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    n = 0
    try:
        for body in messages:
            try:
                payload = wrap(body, profile.message_format)
            except MessageFormatError as e:
                raise ClientError(f"message {n + 1} {e}; {n} message(s) were pushed") from None
            ch.basic_publish("", profile.mqid, payload, props, mandatory=True)
            n += 1
    except pika.exceptions.UnroutableError:
        raise ClientError(f"queue {profile.alias!r} is gone; {n} message(s) were pushed") from None
    except pika.exceptions.AMQPError as e:
        raise ClientError(f"publishing failed after {n} message(s): {type(e).__name__}") from None
    finally:
        if ch.connection.is_open:
            ch.connection.close()
    return n


def dead_letter_queue(mqid: str) -> str:
    """Where the broker moves the messages tasks kept failing on (docs/contracts.md section 3)."""
    return f"{mqid}{DEAD_LETTER_SUFFIX}"


def pull(
    profile: QueueProfile,
    sink: Callable[[bytes], None],
    *,
    n: int | None,
    timeout: float,
    dead_letter: bool = False,
) -> int:
    """Hand each message to `sink`, then ack it; stop after `n` messages or `timeout` s idle.
    With `dead_letter`, read the queue's dead-letter queue instead."""
    queue = dead_letter_queue(profile.mqid) if dead_letter else profile.mqid
    ch = _channel(profile)
    ch.basic_qos(prefetch_count=min(n or 100, 100))
    got = 0
    try:
        last = time.monotonic()
        for method, _props, body in ch.consume(queue, inactivity_timeout=0.5):
            if method is None:
                if time.monotonic() - last >= timeout:
                    break
                continue
            try:
                content = unwrap(body, profile.message_format)
            except MessageFormatError as e:
                ch.basic_nack(method.delivery_tag, requeue=True)
                raise ClientError(
                    f"message {got + 1} from {profile.alias!r}: {e}; it stays in the queue "
                    "(pull it with --raw)"
                ) from None
            sink(content)  # written before the ack: a crash here re-delivers, never loses
            ch.basic_ack(method.delivery_tag)
            got += 1
            last = time.monotonic()
            if n is not None and got >= n:
                break
        ch.cancel()  # returns prefetched, unacked messages to the queue
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code == 404:
            raise ClientError(f"queue {queue!r} is gone; {got} message(s) were pulled") from None
        raise ClientError(f"pulling failed after {got} message(s): {e.reply_text}") from None
    except pika.exceptions.ConnectionClosedByBroker:
        raise ClientError(
            f"the broker closed the connection after {got} message(s) (the workflow's queue "
            "credentials were revoked?)"
        ) from None
    except pika.exceptions.AMQPError as e:
        raise ClientError(f"pulling failed after {got} message(s): {type(e).__name__}") from None
    finally:
        if ch.connection.is_open:
            ch.connection.close()
    return got
