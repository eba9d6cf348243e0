"""A webhook delivery pending when the server is SIGKILLed arrives after the restart: the
outbox is in the store, the restarted server (a real `ewms-server` process on the same data
directory) picks the row up and sends it with the same delivery id."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import wait_until, workflow_body

from .server_process import Api, ServerProcess, free_port, token
from .webhook_receiver import Receiver, signed_by

SECRET = "restart-webhook-secret-0123456789"


def outbox_rows(data_dir: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(data_dir / "ewms.sqlite3", timeout=10)
    try:
        return [json.loads(r[0]) for r in conn.execute('SELECT doc FROM "webhook_outbox" ORDER BY seq')]
    finally:
        conn.close()


async def test_a_pending_delivery_survives_sigkill(tmp_path: Path) -> None:
    receiver_up = {"ok": False}
    receiver = Receiver(plan=lambda _did, _n: 200 if receiver_up["ok"] else 503).start()
    env = {
        "EWMS_CLUSTER_LOCATIONS": json.dumps({"local": "restart-schedd"}),
        "EWMS_LOOP_INTERVAL_S": "0.3",
        "EWMS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "EWMS_WEBHOOK_SECRET": SECRET,
        "EWMS_WEBHOOK_RETRY_BASE_S": "0.2",
        "EWMS_WEBHOOK_RETRY_MAX_S": "0.5",
        "EWMS_WEBHOOK_TIMEOUT_S": "2",
    }
    srv = ServerProcess(tmp_path / "data", free_port(), tmp_path / "server.log", env)
    api = Api(srv.port, token())
    try:
        await asyncio.to_thread(srv.start)
        body = workflow_body(notify_url=receiver.url())
        wid = (await asyncio.to_thread(api.ok, "POST", "/v1/workflows", body))["workflow"]["workflow_id"]

        async def retrying() -> bool:  # the receiver refused it twice: the delivery is pending
            return sum(h.event == "queues-activated" for h in receiver.hits) >= 2

        await wait_until(retrying, timeout=30)
        await asyncio.to_thread(srv.kill)
        [row] = outbox_rows(srv.data_dir)
        assert row["status"] == "pending" and row["attempts"] >= 2
        first_id = receiver.hits[0].delivery_id
        receiver_up["ok"] = True
        api.close()
        await asyncio.to_thread(srv.start)

        async def delivered() -> bool:
            return bool(receiver.delivered())

        await wait_until(delivered, timeout=30)
        [hit] = receiver.delivered()
        assert hit.event == "queues-activated" and hit.delivery_id == first_id == row["delivery_id"]
        assert signed_by(SECRET, hit) and json.loads(hit.body)["workflow_id"] == wid
        assert {h.delivery_id for h in receiver.hits} == {first_id}  # every attempt was this one

        async def recorded() -> bool:
            return outbox_rows(srv.data_dir)[0]["status"] == "delivered"

        await wait_until(recorded, timeout=10)
        log = (tmp_path / "server.log").read_text()
        assert SECRET not in log and "receiver-credential" not in log
    finally:
        api.close()
        await asyncio.to_thread(srv.stop)
        receiver.stop()
