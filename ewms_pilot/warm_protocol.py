"""The warm runner's wire protocol: JSON lines over a unix socket (docs/warm-runner.md).

Stdlib only, because task images import it (through `ewms_pilot.worker`) without the pilot's
dependencies. One line each way per task. A payload up to INLINE_MAX bytes travels in the line,
base64-encoded (so any bytes survive and a line stays one line); a larger one in a file of the
worker's private dir, named in the line (base64 costs more than a file past ~16 KB:
benchmarks/bench_warm_payload.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

VERSION = 1
SOCKET_ENV = "EWMS_WARM_SOCKET"
SOCKET_NAME = "w.sock"
HELLO = b'{"ewms_warm": 1}\n'
INLINE_MAX = 16 * 1024
MAX_LINE = 64 * 1024 * 1024  # a line a peer may send; inline past INLINE_MAX is allowed
_SUN_PATH_MAX = 107  # sockaddr_un holds 108 bytes, with the terminating NUL


@dataclass(frozen=True)
class Task:
    """One task as the worker reads it: the message in `data`, or in the file `infile`."""

    id: int
    outfile: str
    data: bytes | None = None
    infile: str | None = None


class ProtocolError(Exception):
    """A peer sent something that is not the protocol; the message says what, with a snippet."""


class RemoteTaskError(Exception):
    """The worker answered `ok: false`: the task failed, the worker is still usable."""


def encode_task(task: Task) -> bytes:
    if task.data is not None:  # built by hand: json.dumps would scan the base64 text again
        return b'{"id": %d, "outfile": %s, "data": "%s"}\n' % (
            task.id,
            _json_str(task.outfile),
            base64.b64encode(task.data),
        )
    return (json.dumps({"id": task.id, "outfile": task.outfile, "infile": task.infile}) + "\n").encode()


def decode_task(line: bytes) -> Task:
    obj = _object(line, "task")
    task_id, outfile = obj.get("id"), obj.get("outfile")
    if type(task_id) is not int:
        raise ProtocolError("task has no integer id")
    if not isinstance(outfile, str):
        raise ProtocolError("task has no outfile")
    if "data" in obj:
        return Task(task_id, outfile, data=_b64(obj["data"], "task data"))
    infile = obj.get("infile")
    if not isinstance(infile, str):
        raise ProtocolError("task has neither data nor an infile")
    return Task(task_id, outfile, infile=infile)


def encode_result(task_id: int, *, data: bytes | None = None, outfile: str | None = None) -> bytes:
    """`ok: true` with the output in `data`, or written to the task's `outfile`."""
    if data is not None:
        return b'{"id": %d, "ok": true, "data": "%s"}\n' % (task_id, base64.b64encode(data))
    return (json.dumps({"id": task_id, "ok": True, "outfile": outfile}) + "\n").encode()


def encode_failure(task_id: int, error: str) -> bytes:
    return (json.dumps({"id": task_id, "ok": False, "error": error}) + "\n").encode()


def decode_reply(line: bytes, task: Task) -> bytes | None:
    """The output, or None when it is in `task.outfile`; RemoteTaskError for `ok: false`,
    ProtocolError for anything that is not the protocol."""
    obj = _object(line, "reply")
    if type(obj.get("id")) is not int or obj["id"] != task.id:
        raise ProtocolError(f"reply has id {_snippet(obj.get('id'))}, expected {task.id}")
    ok = obj.get("ok")
    if ok is True:
        if "data" in obj:
            return _b64(obj["data"], "reply data")
        if obj.get("outfile") != task.outfile:  # the pilot reads no other file
            raise ProtocolError(
                f"reply has neither data nor outfile {task.outfile!r}: {_snippet(obj.get('outfile'))}"
            )
        return None
    if ok is False:
        error = obj.get("error")
        if not isinstance(error, str):
            raise ProtocolError("failure reply has no string error")
        raise RemoteTaskError(error)
    raise ProtocolError(f"reply has ok {_snippet(ok)}, expected true or false")


def check_hello(line: bytes) -> None:
    obj = _object(line, "hello")
    if obj.get("ewms_warm") != VERSION:
        raise ProtocolError(f"hello speaks {_snippet(obj)}, expected {HELLO.decode().strip()}")


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """An address for bind/connect: the path itself, or (longer than a sockaddr_un holds) the
    same file reached through an open descriptor of its directory."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def _object(line: bytes, what: str) -> dict[str, object]:
    if not line.endswith(b"\n"):
        raise ProtocolError(f"{what} is not a complete line: {_snippet(line)}")
    try:
        obj = json.loads(line)
    except ValueError:
        raise ProtocolError(f"{what} is not JSON: {_snippet(line)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} is not a JSON object: {_snippet(line)}")
    return obj


def _json_str(text: str) -> bytes:
    return json.dumps(text).encode()


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{what} is not valid base64: {_snippet(value)}") from None


def _snippet(value: object, limit: int = 60) -> str:
    """Short and printable: the error text is chirped and grouped by the TMS."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace").rstrip("\n")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
