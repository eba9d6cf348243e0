"""`ewms push` / `ewms pull` in each message format: the workflow's by default, or as told."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pika

from ewms_client.client import EWMSClient
from ewms_pilot.broker import connection_url
from ewms_server.testing import RunningServer

from .cli import EXAMPLES, cli_env, ewms

BLOB = bytes(range(256))


async def test_a_raw_workflow_moves_bytes_as_they_are(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    request = json.loads((EXAMPLES / "square.json").read_text())
    for task in request["tasks"]:
        task["pilot_config"]["environment"]["EWMS_PILOT_MESSAGE_FORMAT"] = "raw"
    (tmp_path / "wf.json").write_text(json.dumps(request))
    (tmp_path / "blob").write_bytes(BLOB)
    code, out, err = await ewms(env, "submit", str(tmp_path / "wf.json"), "--keep-paths")
    assert code == 0, err
    wf = out.strip()

    code, _out, err = await ewms(env, "push", wf, "--queue", "squares", str(tmp_path / "blob"))
    assert code == 0, err  # raw: the workflow's tasks say so

    code, out, err = await ewms(env, "pull", wf, "--envelope", "--out", "-", "--timeout", "2")
    assert code == 1 and out == ""
    assert "message 1 from 'squares': not an oms-mqclient envelope" in err
    assert "it stays in the queue (pull it with --raw)" in err

    code, _out, err = await ewms(env, "pull", wf, "--out", str(tmp_path / "got"), "--timeout", "2")
    assert code == 0, err
    assert [p.read_bytes() for p in (tmp_path / "got").iterdir()] == [BLOB]


async def test_binary_files_need_the_raw_format(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    code, out, err = await ewms(env, "submit", str(EXAMPLES / "square.json"))
    assert code == 0, err
    (tmp_path / "blob").write_bytes(BLOB)

    code, _out, err = await ewms(env, "push", out.strip(), str(tmp_path / "blob"))
    assert code == 1 and "Traceback" not in err
    assert "message 1 is not UTF-8 text, which an envelope cannot carry" in err
    assert "0 message(s) were pushed" in err

    code, _out, err = await ewms(env, "push", out.strip(), "--raw", str(tmp_path / "blob"))
    assert code == 0, err  # told so, it pushes the bytes
    code, _out, err = await ewms(
        env, "pull", out.strip(), "--queue", "numbers", "--raw", "--n", "1", "--out", str(tmp_path / "got")
    )
    assert code == 0, err
    assert [p.read_bytes() for p in (tmp_path / "got").iterdir()] == [BLOB]


async def test_pushing_to_a_deleted_queue_is_an_error(srv: RunningServer) -> None:
    env = cli_env(srv)
    code, out, err = await ewms(env, "submit", str(EXAMPLES / "square.json"))
    assert code == 0, err
    wf = out.strip()
    client = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
    squares = await asyncio.to_thread(client.pick_queue, wf, "squares", "push", 30)
    client._rc.close()

    def delete() -> None:  # the workflow's user may configure its queues
        assert squares.broker_address and squares.auth_token
        conn = pika.BlockingConnection(
            pika.URLParameters(connection_url(squares.broker_address, squares.auth_token))
        )
        conn.channel().queue_delete(squares.mqid)
        conn.close()

    await asyncio.to_thread(delete)
    code, _out, err = await ewms(env, "push", wf, "--queue", "squares", "-", stdin=b"x")
    assert code == 1 and "queue 'squares' is gone; 0 message(s) were pushed" in err
