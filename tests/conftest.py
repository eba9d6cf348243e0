"""Fixtures shared by every test package: a real server on loopback and its clients."""

from __future__ import annotations

import asyncio
import copy
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from rest_tools.client import RestClient

from ewms_server.broker.rabbitmq import RabbitMQSettings, username_for, vhost_for
from ewms_server.testing import RunningServer, running_server

BROKER_URL = os.environ.get("EWMS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
"""The RabbitMQ every broker test uses (admin credentials, management API on port 15672)."""

SCHEDD = "test-schedd"
LOCATIONS = {"local": SCHEDD, "remote": {"schedd": "remote-schedd", "collector": "remote-cm"}}

WORKER_CONFIG = {
    "do_transfer_worker_stdouterr": True,
    "max_worker_runtime": 600,
    "n_cores": 1,
    "priority": 50,
    "worker_disk": "1G",
    "worker_memory": "512M",
}


def workflow_body(n_tasks: int = 1, locations: tuple[str, ...] = ("local",), **extra: Any) -> dict[str, Any]:
    """A valid POST /v1/workflows body: a chain of tasks q0 -> q1 -> ... -> qN."""
    tasks = [
        {
            "cluster_locations": list(locations),
            "task_image": "docker://busybox",
            "task_args": f"step {i}",
            "input_queue_aliases": [f"q{i}"],
            "output_queue_aliases": [f"q{i + 1}"],
            "worker_config": copy.deepcopy(WORKER_CONFIG),
            "n_workers": 2,
        }
        for i in range(n_tasks)
    ]
    return {"tasks": tasks, "public_queue_aliases": ["q0", f"q{n_tasks}"], **extra}


@pytest.fixture(autouse=True, scope="session")
def _no_default_store_of_the_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Programs a test starts without EWMS_DATA_DIR (or a TMS without its job directory)
    must not reach the defaults under the user's home, which a developer's own server uses
    and which another checkout may have upgraded: point the XDG directories at a temp dir."""
    saved = {k: os.environ.get(k) for k in ("XDG_DATA_HOME", "XDG_STATE_HOME")}
    root = tmp_path_factory.mktemp("xdg")
    os.environ["XDG_DATA_HOME"] = str(root / "data")
    os.environ["XDG_STATE_HOME"] = str(root / "state")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(params=["sqlite", "mongomock"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """Every API test runs on the default store (SQLite, a fresh file per server) and on the
    motor code path (mongomock). tests/server/test_real_mongodb.py overrides this with
    EWMS_TEST_MONGODB_URL."""
    return None if request.param == "sqlite" else "mongomock://"


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra server settings; override in a module to change them."""
    return {}


@pytest.fixture
async def server(backend: str | None, server_env: dict[str, str]) -> AsyncIterator[RunningServer]:
    async with running_server(
        cluster_locations=LOCATIONS,
        mongodb_url=backend,
        env={"EWMS_LOOP_INTERVAL_S": "1", **server_env},
    ) as srv:
        yield srv


def _client(srv: RunningServer, role: str, sub: str) -> RestClient:
    return RestClient(srv.url, token=srv.token(role=role, sub=sub), retries=0, timeout=30)


@pytest.fixture
def user(server: RunningServer) -> RestClient:
    return _client(server, "user", "alice")


@pytest.fixture
def user_b(server: RunningServer) -> RestClient:
    return _client(server, "user", "bob")


@pytest.fixture
def admin(server: RunningServer) -> RestClient:
    return _client(server, "admin", "root")


@pytest.fixture
def tms(server: RunningServer) -> RestClient:
    return _client(server, "system-tms", "tms-1")


async def wait_until(
    check: Callable[[], Awaitable[Any] | Any], timeout: float = 10, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `check` (a coroutine function or a plain one) until it returns something truthy
    and return that; fail after `timeout` seconds, naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout} s")
        await asyncio.sleep(interval)


def wait_until_sync(
    check: Callable[[], Any], timeout: float = 10, interval: float = 0.05, what: str = ""
) -> Any:
    """`wait_until` for code that blocks (subprocess tests, threads): the same contract."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {timeout} s")
        time.sleep(interval)
    return value


def broker_objects_gone(workflow_id: str) -> bool:
    """Neither the workflow's broker user nor its vhost (with its queues) is on the broker."""
    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": BROKER_URL})
    api = s.management_url.rstrip("/") + "/api"
    paths = [f"/users/{quote(username_for(workflow_id), safe='')}", f"/vhosts/{vhost_for(workflow_id)}"]
    with requests.Session() as session:
        session.auth = s.admin_auth
        return all(session.get(api + p, timeout=5).status_code == 404 for p in paths)
