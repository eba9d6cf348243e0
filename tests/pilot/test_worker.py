"""`ewms_pilot.worker.serve`, driven by this test playing the pilot's side of the protocol."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ewms_pilot.warm_protocol import (
    HELLO,
    INLINE_MAX,
    SOCKET_ENV,
    RemoteTaskError,
    Task,
    decode_reply,
    encode_task,
)
from ewms_pilot.worker import run_handler, serve


class FakePilot:
    """The pilot's end of one worker's connection."""

    def __init__(self, conn: socket.socket, workdir: Path) -> None:
        self.conn = conn
        self.lines = conn.makefile("rb")
        self.workdir = workdir
        self.next_id = 0

    def hello(self) -> bytes:
        return self.lines.readline()

    def call(self, body: bytes, *, as_file: bool = False) -> bytes:
        self.next_id += 1
        out = str(self.workdir / f"{self.next_id}.out")
        if as_file:
            infile = self.workdir / f"{self.next_id}.in"
            infile.write_bytes(body)
            task = Task(self.next_id, out, infile=str(infile))
        else:
            task = Task(self.next_id, out, data=body)
        self.conn.sendall(encode_task(task))
        output = decode_reply(self.lines.readline(), task)
        return Path(out).read_bytes() if output is None else output


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakePilot]]:
    threads: list[threading.Thread] = []
    conns: list[socket.socket] = []

    def start(handler: Callable[[Any], Any], **kw: Any) -> FakePilot:
        path = tmp_path / f"w{len(threads)}.sock"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        listener.listen(1)
        monkeypatch.setenv(SOCKET_ENV, str(path))
        t = threading.Thread(target=serve, args=(handler,), kwargs=kw, daemon=True)
        t.start()
        threads.append(t)
        conn, _ = listener.accept()
        listener.close()
        conns.append(conn)
        return FakePilot(conn, tmp_path)

    yield start
    for conn in conns:
        conn.close()  # EOF: serve returns
    for t in threads:
        t.join(10)
        assert not t.is_alive()


def test_serve_says_hello_then_answers_each_task(start) -> None:  # type: ignore[no-untyped-def]
    calls: list[bytes] = []

    def handler(data: bytes) -> bytes:
        calls.append(data)
        return data[::-1]

    pilot = start(handler)
    assert pilot.hello() == HELLO
    every = bytes(range(256))
    assert pilot.call(every) == every[::-1]
    assert pilot.call(b"") == b""
    assert calls == [every, b""]


def test_large_payloads_travel_as_files_both_ways(start, tmp_path: Path) -> None:  # type: ignore
    big = os.urandom(INLINE_MAX + 1)
    pilot = start(lambda data: data + b"!")
    pilot.hello()
    assert pilot.call(big, as_file=True) == big + b"!"
    assert (tmp_path / "1.out").read_bytes() == big + b"!"  # not inline: the outfile
    assert pilot.call(b"small", as_file=True) == b"small!"
    assert not (tmp_path / "2.out").exists()  # small output: inline


def test_a_failing_handler_fails_that_task_only(start, capfd) -> None:  # type: ignore
    def handler(data: bytes) -> bytes:
        if data == b"bad":
            raise ValueError("no good")
        return data

    pilot = start(handler)
    pilot.hello()
    with pytest.raises(RemoteTaskError, match=r"^ValueError: no good$"):
        pilot.call(b"bad")
    assert pilot.call(b"next") == b"next"
    assert "Traceback" in capfd.readouterr().err


@pytest.mark.parametrize(
    "input_as, body, result, expected",
    [
        ("bytes", b"\xff", b"raw", b"raw"),
        ("text", "é".encode(), "ü", "ü".encode()),
        ("json", b'{"a": [1, 2]}', {"b": None}, b'{"b": null}'),
        ("json", b"3", 9, b"9"),
        ("text", b"x", None, b"null"),
    ],
)
def test_input_and_result_conversions(input_as: Any, body: bytes, result: Any, expected: bytes) -> None:
    seen: list[Any] = []

    def handler(data: Any) -> Any:
        seen.append(data)
        return result

    assert run_handler(handler, body, input_as) == expected
    decode = {"bytes": bytes, "text": bytes.decode, "json": json.loads}[input_as]
    assert seen == [decode(body)]


def test_bad_input_for_its_kind_fails_the_task_not_the_worker(start) -> None:  # type: ignore
    pilot = start(lambda data: data, input_as="json")
    pilot.hello()
    with pytest.raises(RemoteTaskError, match="JSONDecodeError"):
        pilot.call(b"{not json")
    assert pilot.call(b"[1]") == b"[1]"


def test_the_same_script_runs_under_the_per_message_runner(tmp_path: Path, monkeypatch) -> None:  # type: ignore
    (tmp_path / "in").write_bytes(b"21")
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    monkeypatch.setenv("EWMS_TASK_INFILE", str(tmp_path / "in"))
    monkeypatch.setenv("EWMS_TASK_OUTFILE", str(tmp_path / "out"))
    serve(lambda n: n * 2, input_as="json")
    assert (tmp_path / "out").read_bytes() == b"42"


def test_serve_outside_a_pilot_says_so(monkeypatch) -> None:  # type: ignore
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    monkeypatch.delenv("EWMS_TASK_INFILE", raising=False)
    with pytest.raises(SystemExit, match="not started by an EWMS pilot"):
        serve(lambda d: d)
    with pytest.raises(ValueError, match="input_as must be"):
        serve(lambda d: d, input_as="yaml")  # type: ignore[arg-type]
