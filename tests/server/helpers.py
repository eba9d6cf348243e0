"""Small helpers for driving a taskforce through its phases over HTTP."""

from __future__ import annotations

import time
from typing import Any

import requests
from rest_tools.client import RestClient

from tests.conftest import SCHEDD, wait_until


async def create(user: RestClient, body: dict[str, Any]) -> dict[str, Any]:
    return await user.request("POST", "/v1/workflows", body)


async def phase_of(client: RestClient, uuid: str) -> str:
    return (await client.request("GET", f"/v1/taskforces/{uuid}"))["phase"]


async def wait_phase(client: RestClient, uuid: str, phase: str, timeout: float = 10) -> None:
    async def check() -> bool:
        return await phase_of(client, uuid) == phase

    await wait_until(check, timeout)


async def take_starter(tms: RestClient, schedd: str = SCHEDD, timeout: float = 10) -> dict[str, Any]:
    async def check() -> dict[str, Any]:
        return await tms.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": schedd})

    return await wait_until(check, timeout)


async def submit(tms: RestClient, uuid: str, cluster_id: int = 101, n_workers: int = 2) -> dict[str, Any]:
    return await tms.request(
        "POST",
        f"/v1/tms/condor-submit/taskforces/{uuid}",
        {
            "cluster_id": cluster_id,
            "n_workers": n_workers,
            "submit_dict": {"executable": "x"},
            "job_event_log_fpath": "/var/log/ewms/tf.log",
        },
    )


async def status_of(call: Any) -> int:
    """The HTTP status a RestClient call ends with (200 when it does not raise)."""
    try:
        await call
    except requests.HTTPError as e:
        return int(e.response.status_code)
    return 200


async def error_of(call: Any) -> tuple[int, dict[str, Any]]:
    try:
        await call
    except requests.HTTPError as e:
        return int(e.response.status_code), e.response.json()
    raise AssertionError("expected an HTTP error")


def now() -> float:
    return time.time()


async def loop_passes(
    deps: Any, n: int = 2, names: tuple[str, ...] = ("mq_activation", "launch_control")
) -> None:
    """Wake the loops and wait until each has run `n` whole passes more: what a test waits
    for before saying they did not (wrongly) act."""
    target = {name: deps.loops[name].n_passes + n for name in names}

    def done() -> bool:
        for name in names:
            deps.wake(name)
        return all(deps.loops[name].n_passes >= target[name] for name in names)

    await wait_until(done, 10, what=f"{n} passes of {', '.join(names)}")
