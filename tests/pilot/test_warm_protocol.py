"""The warm protocol's codec: round trips, and every kind of bad line named."""

from __future__ import annotations

import json
import os
import socket

import pytest

from ewms_pilot.warm_protocol import (
    HELLO,
    ProtocolError,
    RemoteTaskError,
    Task,
    check_hello,
    decode_reply,
    decode_task,
    encode_failure,
    encode_result,
    encode_task,
    unix_address,
)

EVERY_BYTE = bytes(range(256)) + b"\n\r\x00 tail"


@pytest.mark.parametrize(
    "task",
    [
        Task(7, "/w/7.out", data=EVERY_BYTE),
        Task(8, "/w/8.out", data=b""),
        Task(9, '/w/odd "dir"\n/9.out', infile="/w/9.in"),
    ],
)
def test_a_task_is_one_json_line_and_decodes_to_itself(task: Task) -> None:
    line = encode_task(task)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert isinstance(json.loads(line), dict)
    assert decode_task(line) == task


def test_replies_decode_to_output_failure_or_the_outfile() -> None:
    task = Task(3, "/w/3.out", data=b"x")
    assert decode_reply(encode_result(3, data=EVERY_BYTE), task) == EVERY_BYTE
    assert decode_reply(encode_result(3, outfile="/w/3.out"), task) is None  # read the file
    with pytest.raises(RemoteTaskError, match=r'^ValueError: "quoted"\nline$'):
        decode_reply(encode_failure(3, 'ValueError: "quoted"\nline'), task)
    assert encode_failure(3, "a\nb").count(b"\n") == 1


@pytest.mark.parametrize(
    "line, message",
    [
        (b"this is not json\n", "reply is not JSON: 'this is not json'"),
        (b'{"id": 3, "ok": true, "data": ""}', "reply is not a complete line"),
        (b"[1, 2]\n", "reply is not a JSON object"),
        (b'{"id": 4, "ok": true, "data": ""}\n', "reply has id 4, expected 3"),
        (b'{"id": true, "ok": true, "data": ""}\n', "reply has id True, expected 3"),
        (b'{"id": 3, "data": ""}\n', "reply has ok None, expected true or false"),
        (b'{"id": 3, "ok": true, "data": "not base64!"}\n', "reply data is not valid base64"),
        (b'{"id": 3, "ok": true, "data": 5}\n', "reply data is not a base64 string"),
        (b'{"id": 3, "ok": true}\n', "reply has neither data nor outfile"),
        (b'{"id": 3, "ok": true, "outfile": "/etc/passwd"}\n', "reply has neither data nor outfile"),
        (b'{"id": 3, "ok": false}\n', "failure reply has no string error"),
        (b"\xff\xfe\n", "reply is not JSON"),
    ],
)
def test_bad_replies_are_protocol_errors_with_a_short_snippet(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(line, Task(3, "/w/3.out", data=b""))
    assert str(info.value).startswith(message)
    assert len(str(info.value)) < 150  # chirped, and grouped by the TMS


def test_a_long_garbage_line_is_cut_in_the_error() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_reply(b"x" * 10_000 + b"\n", Task(1, "o", data=b""))
    assert str(info.value).endswith("...") and len(str(info.value)) < 100


@pytest.mark.parametrize(
    "line, message",
    [
        (b'{"outfile": "o", "data": ""}\n', "task has no integer id"),
        (b'{"id": 1, "data": ""}\n', "task has no outfile"),
        (b'{"id": 1, "outfile": "o"}\n', "task has neither data nor an infile"),
    ],
)
def test_bad_tasks_are_protocol_errors(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_task(line)


def test_hello() -> None:
    check_hello(HELLO)
    with pytest.raises(ProtocolError, match="hello speaks"):
        check_hello(b'{"ewms_warm": 2}\n')
    with pytest.raises(ProtocolError, match="hello is not JSON"):
        check_hello(b"hi\n")


def test_a_socket_path_too_long_for_sockaddr_un_still_binds_and_connects(tmp_path) -> None:  # type: ignore
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    path = str(deep / "w.sock")
    assert len(path) > 108
    server = socket.socket(socket.AF_UNIX)
    client = socket.socket(socket.AF_UNIX)
    with server, client:
        with unix_address(path) as address:
            server.bind(address)
        server.listen(1)
        assert os.path.exists(path)
        with unix_address(path) as address:
            client.connect(address)
        conn, _ = server.accept()
        with conn:
            client.sendall(b"hi")
            assert conn.recv(2) == b"hi"
    with unix_address("/short/w.sock") as address:
        assert address == "/short/w.sock"
