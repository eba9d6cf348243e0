"""A streaming multipart/form-data parser: bytes in as they arrive, events out, nothing held
beyond one part's headers and a boundary's length of data.

`feed(chunk)` returns the events the chunk completes: `PartStart` (the part's form name and
file name), `bytes` (part data, in pieces), `PartEnd`. `close()` raises unless the closing
boundary was seen. Malformed input raises `MultipartError` with a short reason.
"""

from __future__ import annotations

import email.message
from dataclasses import dataclass

MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True)
class PartStart:
    name: str
    filename: str | None


@dataclass(frozen=True)
class PartEnd:
    pass


Event = PartStart | PartEnd | bytes

_PREAMBLE, _HEADERS, _BODY, _AFTER_DELIMITER, _EPILOGUE = range(5)


def boundary_of(content_type: str | None) -> str:
    """The boundary of a multipart/form-data Content-Type header; MultipartError otherwise."""
    msg = email.message.Message()
    msg["content-type"] = content_type or ""
    if msg.get_content_type() != "multipart/form-data":
        raise MultipartError("Content-Type must be multipart/form-data")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise MultipartError("Content-Type: multipart/form-data needs a boundary of 1-70 characters")
    return boundary


def _part_start(raw: bytes) -> PartStart:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError("part headers are not UTF-8") from None
    msg = email.message.Message()
    for line in text.split("\r\n"):
        header, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(f"malformed part header {line[:80]!r}")
        msg[header.strip()] = value.strip()
    if msg.get("content-disposition") is None:
        raise MultipartError("a part has no Content-Disposition header")
    if msg.get_content_disposition() != "form-data":
        raise MultipartError("a part's Content-Disposition is not form-data")
    name = msg.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        raise MultipartError("a part's Content-Disposition has no name")
    filename = msg.get_filename()
    return PartStart(name=name, filename=filename if isinstance(filename, str) else None)


class MultipartParser:
    def __init__(self, boundary: str) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buf = b"\r\n"  # the first boundary has no CRLF before it: pretend it had
        self._state = _PREAMBLE

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        if self._state != _EPILOGUE:
            raise MultipartError("the body ended before the closing boundary")

    def _step(self, events: list[Event]) -> bool:
        """Consume what the buffer allows in the current state; True to go on."""
        buf, d = self._buf, self._delimiter
        if self._state == _PREAMBLE:
            i = buf.find(d)
            if i < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError("no boundary found at the start of the body")
                return False
            self._buf, self._state = buf[i + len(d) :], _AFTER_DELIMITER
            return True
        if self._state == _AFTER_DELIMITER:
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._buf, self._state = b"", _EPILOGUE
                return False
            if buf[:2] != b"\r\n":
                raise MultipartError("a boundary is followed by neither CRLF nor '--'")
            self._buf, self._state = buf[2:], _HEADERS
            return True
        if self._state == _HEADERS:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError(f"part headers longer than {MAX_HEADER_BYTES} bytes")
                return False
            events.append(_part_start(buf[:i]))
            self._buf, self._state = buf[i + 4 :], _BODY
            return True
        if self._state == _BODY:
            i = buf.find(d)
            if i < 0:
                keep = len(d) - 1  # the start of a delimiter split across chunks
                if len(buf) > keep:
                    events.append(buf[: len(buf) - keep])
                    self._buf = buf[len(buf) - keep :]
                return False
            if i:
                events.append(buf[:i])
            events.append(PartEnd())
            self._buf, self._state = buf[i + len(d) :], _AFTER_DELIMITER
            return True
        self._buf = b""  # the epilogue is ignored
        return False
