"""The TMS's one loop runner and its error policy; the starter's share of it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.conftest import wait_until
from tms import loops, starter
from tms.backends.base import BackendError
from tms.client import AuthRejected, ServerRejected
from tms.tracking import Registry

from .conftest import make_cfg, pending
from .fakes import RecordingClient


async def test_a_failing_loop_never_stops_the_others() -> None:
    stop = asyncio.Event()
    broken, healthy = loops.LoopState("broken", 0.01), loops.LoopState("healthy", 0.01)

    async def bug() -> bool:
        raise KeyError("taskforce")

    async def fine() -> bool:
        return False

    runner = asyncio.create_task(
        loops.run_all([(broken, bug), (healthy, fine)], stop, backoff_min=0.001, backoff_max=0.01)
    )
    await wait_until(lambda: broken.n_errors >= 5 and healthy.n_passes >= 20)
    assert not runner.done()
    assert broken.last_error == "KeyError: 'taskforce'" and healthy.n_errors == 0
    stop.set()
    assert await asyncio.wait_for(runner, 5) is None


async def test_transient_errors_back_off_and_recover() -> None:
    stop = asyncio.Event()
    state = loops.LoopState("starter", 3600)  # an idle wait this long would stall the test
    seen: list[float] = []

    async def flaky() -> bool:
        seen.append(state.backoff)
        if len(seen) <= 5:
            raise BackendError("schedd unreachable")
        if len(seen) == 6:
            return True  # recovered, and found work: the next pass follows at once
        stop.set()
        return False

    await asyncio.wait_for(
        loops.run_loop(state, flaky, stop, loops.ErrorLog(), backoff_min=0.01, backoff_max=0.04), 10
    )
    assert seen == [0.0, 0.01, 0.02, 0.04, 0.04, 0.04, 0.0]
    assert state.n_errors == 5 and state.last_error is None


async def test_stop_ends_every_loop_promptly() -> None:
    stop = asyncio.Event()
    states = [loops.LoopState(n, 3600) for n in ("a", "b", "c")]

    async def idle() -> bool:
        return False

    runner = asyncio.create_task(loops.run_all([(s, idle) for s in states], stop))
    await wait_until(lambda: all(s.n_passes for s in states))
    stop.set()
    await asyncio.wait_for(runner, 2)  # not the hour of their interval
    assert runner.done() and runner.result() is None and all(s.n_passes == 1 for s in states)


async def test_a_refused_token_ends_them_all_with_the_reason() -> None:
    stop = asyncio.Event()

    async def refused() -> bool:
        raise AuthRejected("GET", "/v1/tms/pending-starter/taskforces", 403, "forbidden")

    async def idle() -> bool:
        return False

    reason = await asyncio.wait_for(
        loops.run_all(
            [(loops.LoopState("starter", 1), refused), (loops.LoopState("watcher", 3600), idle)], stop
        ),
        5,
    )
    assert reason is not None and "403" in reason and "starter" in reason and stop.is_set()


def test_a_bug_is_logged_in_full_once_then_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    log = loops.ErrorLog(every=3600)
    caplog.set_level(logging.WARNING, logger="tms.loops")
    for _ in range(50):
        log.log("starter", TypeError("bad"), bug=True)
        log.log("stopper", ServerRejected("GET", "/x", 400, "no"), bug=False)
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert len(with_traceback) == 1 and "a bug" in with_traceback[0].getMessage()
    assert len(caplog.records) == 2  # one per distinct error, the repeats held back
    log.every = 0  # a minute later: one line says how many were held back
    log.log("starter", TypeError("bad"), bug=True)
    assert (
        "50 time(s) since last logged" in caplog.records[-1].getMessage() and not caplog.records[-1].exc_info
    )


async def test_starter_reports_backend_failures_not_its_own_bugs(tmp_path: Any) -> None:
    class FailingBackend:
        name = "htcondor"

        async def find_cluster(self, uuid: str) -> None:
            return None

        async def submit(self, spec: Any) -> int:
            raise BackendError("schedd said no")

    client = RecordingClient()
    deps = starter.StarterDeps(make_cfg(tmp_path), client, FailingBackend(), Registry())  # type: ignore[arg-type]
    client.pending_starter.append(pending(uuid="TF-1"))
    assert await starter.start_one(deps)
    assert client.named("fail_submit") == [("TF-1", "BackendError: schedd said no")]

    broken = pending(uuid="TF-2")
    del broken["task_directive"]  # the server's answer lacks a part: our bug, not the taskforce's
    client.pending_starter.append(broken)
    with pytest.raises(KeyError):
        await starter.start_one(deps)
    assert [u for u, _ in client.named("fail_submit")] == ["TF-1"]

    bad = pending(uuid="TF-3")
    bad["task_directive"]["task_image"] = "/bin/true\x00"  # what no backend can start
    client.pending_starter.append(bad)
    assert await starter.start_one(deps)
    uuid, error = client.named("fail_submit")[-1]
    assert uuid == "TF-3" and "InvalidTaskforce" in error and "NUL" in error
