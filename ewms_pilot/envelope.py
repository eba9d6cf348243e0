"""The message format on EWMS queues: oms-mqclient's envelope by default, raw bytes on request.

Envelope (what oms-mqclient's `Message.serialize` writes and EWMS's published pilot reads):
`zstd.compress(json.dumps({"headers": {...}, "data": <any JSON value>}).encode("utf-8"), 3, 1)`.

Both directions go through bytes, so that the task runner and the CLI deal in bytes only:

- `unwrap` (a message to a task's input file, or to `ewms pull`'s output): `data` as UTF-8 text
  when it is a string, anything else as JSON;
- `wrap` (a task's output file, or a message `ewms push` reads): the bytes as the text string
  `data`, so they must be UTF-8; binary payloads need the raw format.

`raw` passes bytes through untouched on both sides, for workflows whose every task sets
`EWMS_PILOT_MESSAGE_FORMAT=raw` (EWMS's own pilot and oms-mqclient cannot read such queues).
"""

from __future__ import annotations

import json
from typing import Any

import zstd

ENVELOPE, RAW = "envelope", "raw"
FORMATS = (ENVELOPE, RAW)
ZSTD_LEVEL, ZSTD_THREADS = 3, 1  # oms-mqclient's choice


class MessageFormatError(ValueError):
    """A message or a payload the format cannot carry; the text says which and why."""


def encode(data: Any, headers: dict[str, Any] | None = None) -> bytes:
    """The envelope of `data` (any JSON value), byte for byte what oms-mqclient writes."""
    return zstd.compress(
        json.dumps({"headers": headers or {}, "data": data}).encode("utf-8"), ZSTD_LEVEL, ZSTD_THREADS
    )


def decode(payload: bytes) -> Any:
    """The `data` of an envelope."""
    try:
        doc = json.loads(zstd.decompress(payload))
    except (zstd.Error, ValueError):
        raise MessageFormatError(
            "not an oms-mqclient envelope (zstd-compressed JSON); raw payloads need "
            f"EWMS_PILOT_MESSAGE_FORMAT={RAW}"
        ) from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise MessageFormatError("envelope without a 'data' field")
    return doc["data"]


def unwrap(payload: bytes, fmt: str) -> bytes:
    """A message as the bytes a task (or a user) sees."""
    if fmt == RAW:
        return payload
    data = decode(payload)
    if isinstance(data, str):
        return data.encode("utf-8")
    return json.dumps(data).encode("utf-8")


def wrap(content: bytes, fmt: str) -> bytes:
    """Bytes (a task's output, a file to push) as a message."""
    if fmt == RAW:
        return content
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageFormatError(
            f"is not UTF-8 text, which an envelope cannot carry (binary payloads need the {RAW} message format)"
        ) from None
    return encode(text)
