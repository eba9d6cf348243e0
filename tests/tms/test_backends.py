"""One conformance suite for every backend: htcondor (schedd faked at its boundary) and local."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import htcondor2
import pytest

from tests.conftest import wait_until_sync
from tms.backends.base import BackendError
from tms.backends.htcondor import HTCondorBackend
from tms.backends.local import LocalBackend
from tms.submit import build_spec, prepare_job_dir

from .conftest import make_cfg, pending
from .fakes import FakeSchedd


@pytest.fixture(params=["htcondor", "local"])
async def backend(request: Any, tmp_path: Any) -> AsyncIterator[Any]:
    if request.param == "htcondor":
        schedd = FakeSchedd()
        b: Any = HTCondorBackend("test-schedd", schedd_factory=lambda name: schedd)
        b.fake = schedd
    else:
        b = LocalBackend.from_config(make_cfg(tmp_path))
    yield b
    await b.close()


def _spec(tmp_path: Any, backend: Any, uuid: str, **env: str) -> Any:
    cfg = make_cfg(tmp_path)
    p = pending(uuid=uuid, n_workers=2)
    p["taskforce"]["pilot_config"]["environment"].update(env)
    runner, chirp = ("process", "file") if backend.name == "local" else ("apptainer", "htcondor")
    spec, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner=runner, chirp=chirp
    )
    prepare_job_dir(spec, secrets)
    return spec


async def test_submit_find_remove(backend: Any, tmp_path: Any) -> None:
    assert await backend.find_cluster("TF-1") is None
    spec = _spec(tmp_path, backend, "TF-1", FAKE_PILOT_MODE="sleep")
    cluster = await backend.submit(spec)
    assert isinstance(cluster, int)
    assert await backend.find_cluster("TF-1") == cluster
    assert await backend.find_cluster("TF-2") is None
    other = await backend.submit(_spec(tmp_path, backend, "TF-2", FAKE_PILOT_MODE="sleep"))
    assert other != cluster and await backend.find_cluster("TF-2") == other
    await backend.remove(cluster, "test")
    await backend.remove(other, "test", proc=1)
    await backend.remove(other, "test")
    # a removed cluster is still found (history): a late re-submit must not happen
    assert await backend.find_cluster("TF-1") == cluster
    if backend.name == "local":
        wait_until_sync(lambda: not backend.live_supervisors(), 15, what="the supervisors to end")
        with open(spec.job_event_log_fpath) as f:
            text = f.read()
        assert text.count("Job was aborted") == 2 and "Cluster removed" in text


async def test_errors_are_backend_errors(backend: Any, tmp_path: Any) -> None:
    if backend.name == "htcondor":
        backend.fake.fail_next = htcondor2.HTCondorException("Unable to locate local daemon")
        with pytest.raises(BackendError):
            await backend.submit(_spec(tmp_path, backend, "TF-3"))
    with pytest.raises(BackendError):
        await backend.remove(987654, "no such cluster") if backend.name == "local" else _raise()


def _raise() -> None:
    raise BackendError("the fake accepts any cluster id")


def test_htcondor_backend_passes_a_real_submit_object(tmp_path: Any) -> None:
    import asyncio

    schedd = FakeSchedd()
    b = HTCondorBackend("s", schedd_factory=lambda name: schedd)
    spec = _spec(tmp_path, b, "TF-9")
    cluster = asyncio.run(b.submit(spec))
    [sub] = schedd.submitted
    assert sub["MY.EWMSTaskforceUUID"] == '"TF-9"' and len([k for k in schedd.jobs if k[0] == cluster]) == 2
    asyncio.run(b.release(cluster, 1))
    assert schedd.actions[-1][:2] == (htcondor2.JobAction.Release, f"{cluster}.1")
    assert os.path.exists(spec.job_dir)
