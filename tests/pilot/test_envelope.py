"""The message envelope against oms-mqclient's own code, and the raw format."""

from __future__ import annotations

import json

import pytest
import zstd
from mqclient.broker_client_interface import Message

from ewms_pilot.envelope import ENVELOPE, RAW, MessageFormatError, decode, encode, unwrap, wrap

VALUES = ["text", "", "ünïcode ✓", 3, 2.5, None, True, [1, "a"], {"k": {"n": [1, 2]}}]


@pytest.mark.parametrize("data", VALUES)
def test_our_envelope_is_byte_for_byte_mqclients(data: object) -> None:
    assert encode(data) == Message.serialize(data)
    assert Message("id", encode(data)).data == data
    assert decode(Message.serialize(data, headers={"trace": "x"})) == data


def test_a_task_reads_text_as_text_and_anything_else_as_json() -> None:
    assert unwrap(Message.serialize("7\n"), ENVELOPE) == b"7\n"
    assert unwrap(Message.serialize("ünïcode"), ENVELOPE) == "ünïcode".encode()
    assert json.loads(unwrap(Message.serialize({"k": [1, 2]}), ENVELOPE)) == {"k": [1, 2]}
    assert unwrap(Message.serialize(3), ENVELOPE) == b"3"


def test_outputs_are_sent_as_text_data() -> None:
    assert Message("id", wrap(b"49\n", ENVELOPE)).data == "49\n"
    assert Message("id", wrap(b'{"a": 1}', ENVELOPE)).data == '{"a": 1}'
    with pytest.raises(MessageFormatError, match=r"not UTF-8 text.*raw message format"):
        wrap(b"\xff\x00binary", ENVELOPE)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"3", "not an oms-mqclient envelope"),
        (b"", "not an oms-mqclient envelope"),
        (Message.serialize("x")[:-3], "not an oms-mqclient envelope"),
        (zstd.compress(b"[1, 2]"), "without a 'data' field"),
        (zstd.compress(b'{"headers": {}}'), "without a 'data' field"),
        (zstd.compress(b"not json"), "not an oms-mqclient envelope"),
    ],
)
def test_unreadable_messages_say_why(payload: bytes, message: str) -> None:
    with pytest.raises(MessageFormatError, match=message):
        unwrap(payload, ENVELOPE)


def test_raw_passes_bytes_through_both_ways() -> None:
    blob = bytes(range(256))
    assert wrap(blob, RAW) == blob and unwrap(blob, RAW) == blob
