"""Two servers sharing one store (SQLite file) deliver each webhook once: a row is leased
before its attempt, so neither sends what the other is sending."""

from __future__ import annotations

import tempfile
from collections import Counter
from typing import Any

from rest_tools.client import RestClient

from ewms_server.testing import RunningServer, running_server
from tests.conftest import wait_until, workflow_body
from tests.server.webhook_receiver import Receiver

N_WORKFLOWS = 15


def count_attempts(srv: RunningServer, counts: Counter[str]) -> None:
    delivery = srv.server._webhooks
    assert delivery is not None
    real = delivery.sender.post

    async def post(url: str, body: str, **kw: Any) -> Any:
        counts[kw["delivery_id"]] += 1
        return await real(url, body, **kw)

    delivery.sender.post = post  # type: ignore[method-assign]


async def test_two_replicas_send_each_delivery_once() -> None:
    receiver = Receiver(delay_s=0.05).start()
    with tempfile.TemporaryDirectory(prefix="ewms-") as data:
        env = {
            "EWMS_DATA_DIR": data,
            "EWMS_LOOP_INTERVAL_S": "0.05",
            "EWMS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "EWMS_WEBHOOK_SECRET": "replica-webhook-secret-0123",
            "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "0",
        }
        async with running_server(env=env) as a, running_server(env=env) as b:
            sent: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
            count_attempts(a, sent[0])
            count_attempts(b, sent[1])
            users = [RestClient(s.url, token=s.token(), retries=0, timeout=30) for s in (a, b)]
            try:
                for i in range(N_WORKFLOWS):
                    user = users[i % 2]
                    wf = (
                        await user.request("POST", "/v1/workflows", workflow_body(notify_url=receiver.url()))
                    )["workflow"]
                    await user.request("POST", f"/v1/workflows/{wf['workflow_id']}/actions/abort")

                async def all_delivered() -> list[dict[str, Any]]:
                    rows = await a.deps.store.find("webhook_outbox", {})
                    done = all(r["status"] == "delivered" for r in rows)
                    return rows if done and len(rows) >= N_WORKFLOWS else []

                rows = await wait_until(all_delivered, timeout=60)
                # each workflow: aborted, and activated if that came first (both servers activate)
                events = Counter(r["event"] for r in rows)
                assert events["workflow-aborted"] == N_WORKFLOWS and set(events) <= {
                    "workflow-aborted",
                    "queues-activated",
                }
                assert Counter(h.delivery_id for h in receiver.hits) == {r["delivery_id"]: 1 for r in rows}
                assert sent[0] + sent[1] == Counter({r["delivery_id"]: 1 for r in rows})
            finally:
                for u in users:
                    u.close()
                receiver.stop()
