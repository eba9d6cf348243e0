"""/v1/health reports the broker (issue 10 B5): a refused admin login or an unreachable broker
is a 503 whose body names the problem, on real servers pointed at the real RabbitMQ with a
wrong password or at closed ports; one check serves many health calls."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import requests

from ewms_server.broker.health import BrokerHealth
from ewms_server.testing import running_server
from tests.conftest import BROKER_URL


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


async def health_of(broker_env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with running_server(broker_env=broker_env) as srv:
        resp = await asyncio.to_thread(requests.get, f"{srv.url}/v1/health", timeout=30)
        return resp.status_code, resp.json()


async def test_a_working_broker_is_healthy() -> None:
    status, body = await health_of({"EWMS_BROKER_URL": BROKER_URL})
    assert status == 200 and body["healthy"] is True
    assert body["broker"] == {"healthy": True, "configured": True}


async def test_no_broker_configured_is_said_and_healthy() -> None:
    status, body = await health_of({})
    assert status == 200 and body["broker"] == {"healthy": True, "configured": False}


async def test_a_refused_admin_login_is_a_503_naming_it() -> None:
    wrong = BROKER_URL.replace("guest:guest@", "guest:not-the-password@")
    assert wrong != BROKER_URL
    status, body = await health_of({"EWMS_BROKER_URL": wrong})
    assert status == 503 and body["healthy"] is False
    assert body["broker"]["healthy"] is False and body["broker"]["configured"] is True
    assert "refused the admin login of EWMS_BROKER_URL (401)" in body["broker"]["error"]
    assert "not-the-password" not in str(body)
    assert body["database"]["healthy"] is True  # the rest is still said


async def test_an_unreachable_management_api_is_a_503() -> None:
    port = closed_port()
    status, body = await health_of(
        {"EWMS_BROKER_URL": BROKER_URL, "EWMS_BROKER_MANAGEMENT_URL": f"http://127.0.0.1:{port}"}
    )
    assert status == 503
    assert body["broker"]["error"] == f"RabbitMQ management API unreachable at http://127.0.0.1:{port}"


async def test_a_closed_amqp_port_is_a_503() -> None:
    """The management API answers, but pilots and users could not connect."""
    port = closed_port()
    status, body = await health_of(
        {
            "EWMS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port}/%2F",
            "EWMS_BROKER_MANAGEMENT_URL": "http://127.0.0.1:15672",
        }
    )
    assert status == 503
    assert body["broker"]["error"].startswith(f"RabbitMQ AMQP port 127.0.0.1:{port} unreachable")


class CountingBroker:
    def __init__(self, problem: str | None) -> None:
        self.problem, self.calls = problem, 0
        self.release = asyncio.Event()

    async def health(self) -> str | None:
        self.calls += 1
        await self.release.wait()
        return self.problem


async def test_one_check_answers_every_caller_meanwhile_and_is_reused() -> None:
    broker = CountingBroker("down")
    health = BrokerHealth(broker, cache_s=60)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(health.problem()) for _ in range(20)]
    await asyncio.sleep(0)
    broker.release.set()
    assert await asyncio.gather(*waiting) == ["down"] * 20
    assert await health.problem() == "down"
    assert broker.calls == 1
    health.cache_s = 0  # stale at once: the next caller checks again
    broker.problem = None
    assert await health.problem() is None and broker.calls == 2


def test_ewms_server_with_a_wrong_broker_password_answers_503(tmp_path: Any) -> None:
    """The console script as an operator runs it, pointed at the local RabbitMQ with a
    password it refuses: health is a 503 naming the broker, and the server keeps serving."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import wait_until_sync
    from tests.server.server_process import REPO, SECRET, free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env.update(
        PYTHONPATH=str(REPO),
        EWMS_AUTH_SECRET=SECRET,
        EWMS_REST_PORT=str(port),
        EWMS_DATA_DIR=str(tmp_path),
        EWMS_BROKER_URL=BROKER_URL.replace("guest:guest@", "guest:pw-rabbit-refuses@"),
    )
    proc = subprocess.Popen([sys.executable, "-m", "ewms_server"], env=env, stderr=subprocess.PIPE, text=True)
    try:

        def health() -> tuple[int, dict[str, Any]] | None:  # (a Response of a 503 is falsy)
            try:
                r = requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=10)
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return None
            return r.status_code, r.json()

        status, body = wait_until_sync(health, 30, 0.1, what="the server answering")
        assert status == 503
        assert "refused the admin login of EWMS_BROKER_URL (401)" in body["broker"]["error"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "pw-rabbit-refuses" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
