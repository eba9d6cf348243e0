"""`serve(handler)`: a warm EWMS task as one Python function (docs/warm-runner.md).

    from ewms_pilot.worker import serve

    def square(text: str) -> str:
        return f"{int(text) ** 2}\\n"

    if __name__ == "__main__":
        serve(square, input_as="text")

Started by a pilot with `EWMS_PILOT_TASK_MODE=warm`, `serve` connects to `$EWMS_WARM_SOCKET`
and calls `handler` once per message until the pilot closes the connection. Started by the
per-message runner (`$EWMS_TASK_INFILE` set), it handles that one message and returns, so the
same script runs in both modes. Stdlib only: a task image needs no pilot dependencies.

The handler gets the message as `bytes` (`input_as="bytes"`, the default), `str` ("text",
UTF-8) or the parsed JSON value ("json"). Its result is sent as is if `bytes`, UTF-8 if `str`,
else as JSON. An exception fails that task only (its traceback goes to stderr, its text to the
pilot); the worker serves the next one. The task's own stdout and stderr are free for prints.
"""

from __future__ import annotations

import json
import os
import socket
import traceback
from collections.abc import Callable
from typing import Any, Literal

from .warm_protocol import (
    HELLO,
    INLINE_MAX,
    SOCKET_ENV,
    Task,
    decode_task,
    encode_failure,
    encode_result,
    unix_address,
)

InputAs = Literal["bytes", "text", "json"]


def serve(handler: Callable[[Any], Any], *, input_as: InputAs = "bytes") -> None:
    """Serve tasks until the pilot is done with this worker."""
    if input_as not in ("bytes", "text", "json"):
        raise ValueError(f"input_as must be 'bytes', 'text' or 'json', not {input_as!r}")
    path = os.environ.get(SOCKET_ENV)
    if path:
        _serve_socket(path, handler, input_as)
    elif os.environ.get("EWMS_TASK_INFILE"):
        _serve_once(handler, input_as)
    else:
        raise SystemExit(
            f"serve: not started by an EWMS pilot (neither ${SOCKET_ENV} nor $EWMS_TASK_INFILE is set)"
        )


def run_handler(handler: Callable[[Any], Any], body: bytes, input_as: InputAs) -> bytes:
    """The handler's output for one message, as bytes."""
    if input_as == "text":
        data: Any = body.decode("utf-8")
    elif input_as == "json":
        data = json.loads(body)
    else:
        data = body
    result = handler(data)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    return json.dumps(result).encode("utf-8")


def _serve_socket(path: str, handler: Callable[[Any], Any], input_as: InputAs) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix_address(path) as address:
        sock.connect(address)
    with sock, sock.makefile("rb") as lines:
        sock.sendall(HELLO)
        for line in lines:
            task = decode_task(line)  # a bad line from the pilot is a bug: raise
            try:
                body = task.data if task.data is not None else _read(task.infile)
                reply = _result(task, run_handler(handler, body, input_as))
            except Exception as e:  # the task failed, not the worker
                traceback.print_exc()
                reply = encode_failure(task.id, f"{type(e).__name__}: {e}")
            sock.sendall(reply)


def _result(task: Task, output: bytes) -> bytes:
    if len(output) <= INLINE_MAX:
        return encode_result(task.id, data=output)
    with open(task.outfile, "wb") as f:
        f.write(output)
    return encode_result(task.id, outfile=task.outfile)


def _read(path: str | None) -> bytes:
    assert path is not None
    with open(path, "rb") as f:
        return f.read()


def _serve_once(handler: Callable[[Any], Any], input_as: InputAs) -> None:
    body = _read(os.environ["EWMS_TASK_INFILE"])
    output = run_handler(handler, body, input_as)  # an exception: traceback, exit code 1
    with open(os.environ["EWMS_TASK_OUTFILE"], "wb") as f:
        f.write(output)
