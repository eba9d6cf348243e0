"""The TMS (a real subprocess, local backend) against a real ewms_server on loopback."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
from typing import Any

from rest_tools.client import RestClient

from ewms_server.storage.base import Change
from ewms_server.testing import running_server
from tests.conftest import wait_until
from tests.processes import stop_process
from tms.backends.local import LocalBackend
from tms.submit import build_spec, prepare_job_dir

from .conftest import FAKE_PILOT
from .isolation import ISOLATED, JOB_PYTHON, job_root, uid_range

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def workflow_body(mode: str) -> dict[str, Any]:
    return {
        "tasks": [
            {
                "cluster_locations": ["local"],
                "task_image": "/bin/true",
                "task_args": "",
                "input_queue_aliases": ["in"],
                "output_queue_aliases": ["out"],
                "pilot_config": {
                    "tag": "latest",
                    "image_source": "cvmfs",
                    "environment": {"FAKE_PILOT_MODE": mode},
                    "input_files": [],
                },
                "worker_config": {
                    "do_transfer_worker_stdouterr": True,
                    "max_worker_runtime": 600,
                    "n_cores": 1,
                    "priority": 50,
                    "worker_disk": "1G",
                    "worker_memory": "512M",
                },
                "n_workers": 2,
            }
        ],
        "public_queue_aliases": ["in", "out"],
    }


def local_settings(jobs: str, uids: tuple[int, int]) -> dict[str, str]:
    return {
        "EWMS_TMS_SCHEDD": "test-schedd",
        "EWMS_TMS_BACKEND": "local",
        "EWMS_TMS_JOB_EVENT_LOG_DIR": jobs,
        "EWMS_TMS_LOCAL_JOB_COMMAND": f"{JOB_PYTHON} {FAKE_PILOT}",
        "EWMS_TMS_LOCAL_UID_RANGE": f"{uids[0]}-{uids[1]}",
        "EWMS_TMS_LOCAL_SINGLE_TENANT": "false" if ISOLATED else "true",
    }


def start_tms(srv: Any, jobs: str, log: str, uids: tuple[int, int]) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
        "PYTHONPATH": REPO,
        "EWMS_TMS_SERVER_URL": srv.url,
        "EWMS_TMS_TOKEN": srv.token(role="system-tms", sub="tms"),
        **local_settings(jobs, uids),
        "EWMS_TMS_STARTER_INTERVAL": "0.1",
        "EWMS_TMS_STOPPER_INTERVAL": "0.1",
        "EWMS_TMS_WATCHER_INTERVAL": "0.2",
        "EWMS_TMS_TRACKER_INTERVAL": "1",
        "EWMS_TMS_LOG_LEVEL": "DEBUG",
    }
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tms"], env=env, stdout=out, stderr=out, cwd=REPO)


async def wait_for(rc: RestClient, uuid: str, cond: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The taskforce, once `cond` holds for it."""
    seen: list[dict[str, Any]] = []

    async def met() -> dict[str, Any] | None:
        seen[:] = [await rc.request("GET", f"/v1/taskforces/{uuid}")]
        return seen[0] if cond(seen[0]) else None

    try:
        return await wait_until(met, timeout, 0.1)  # type: ignore[no-any-return]
    except AssertionError:
        raise AssertionError(f"timed out; taskforce is {json.dumps(seen[-1])[:1500]}") from None


async def test_crash_between_submit_and_report_then_full_lifecycle(tmp_path: Any) -> None:
    jobs = os.path.join(job_root(tmp_path.name), "jobs")
    uids = uid_range()
    tms_log = str(tmp_path / "tms.log")
    async with running_server(
        cluster_locations={"local": "test-schedd"}, env={"EWMS_STARTER_LEASE_S": "1"}
    ) as srv:
        user = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
        tms_rc = RestClient(srv.url, srv.token(role="system-tms", sub="tms"), retries=0)
        wf = await user.request("POST", "/v1/workflows", workflow_body("sleep"))
        uuid = wf["taskforces"][0]["taskforce_uuid"]
        wf_id = wf["workflow"]["workflow_id"]

        # a first TMS gets the taskforce and submits it, then dies before reporting condor-submit
        got = await wait_until(
            lambda: tms_rc.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": "test-schedd"}),
            20,
            0.1,
            what="the taskforce in pending-starter",
        )
        assert got["taskforce"]["taskforce_uuid"] == uuid
        from tms.config import from_env

        cfg = from_env({"EWMS_TMS_SERVER_URL": srv.url, "EWMS_TMS_TOKEN": "x", **local_settings(jobs, uids)})
        spec, secrets = build_spec(
            cfg, got["taskforce"], got["task_directive"], got["mqprofiles"], runner="process", chirp="file"
        )
        prepare_job_dir(spec, secrets)
        crashed_cluster = await LocalBackend.from_config(cfg).submit(spec)

        # the restarted TMS finds that cluster instead of submitting a second one
        tms = start_tms(srv, jobs, tms_log, uids)
        try:
            tf = await wait_for(user, uuid, lambda t: t["phase"] == "condor-submit")
            assert tf["cluster_id"] == crashed_cluster
            assert tf["n_workers"] == 2 and tf["job_event_log_fpath"] == spec.job_event_log_fpath
            assert len(glob.glob(os.path.join(cfg.local_state_dir, "clusters", "*.json"))) == 1
            # the jobs run and their pilots' statuses reach the server
            tf = await wait_for(
                user, uuid, lambda t: t.get("compound_statuses") == {"RUNNING": {"Tasking": 2}}
            )
            assert "submit_dict" in tf and "mq-" not in json.dumps(tf["submit_dict"]).lower()

            # kill the TMS for real while jobs run; a new one keeps watching the same cluster
            tms.kill()
            tms.wait()
            tms = start_tms(srv, jobs, tms_log, uids)
            await user.request("POST", f"/v1/workflows/{wf_id}/actions/finished")
            tf = await wait_for(user, uuid, lambda t: t["phase"] == "condor-complete", timeout=40)
            assert tf["compound_statuses"] == {"REMOVED": {"Tasking": 2}}
            assert len(glob.glob(os.path.join(cfg.local_state_dir, "clusters", "*.json"))) == 1
            # the watcher reports the cluster gone once every job has ended, which may be just
            # before the supervisor appends its final event
            for _ in range(100):
                with open(spec.job_event_log_fpath) as f:
                    text = f.read()
                if "Cluster removed" in text:
                    break
                await asyncio.sleep(0.05)
            assert text.count("Job submitted") == 2 and text.count("Job was aborted") == 2
            assert "Cluster removed" in text
        finally:
            stop_process(tms)
            user.close()
            tms_rc.close()
        with open(tms_log) as f:
            log_text = f.read()
        for token in (srv.token(role="system-tms", sub="tms"),):
            assert token not in log_text
        for mq in got["mqprofiles"]:
            if mq.get("auth_token"):
                assert mq["auth_token"] not in log_text


async def test_tms_killed_between_submit_and_report_makes_one_cluster(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A real SIGKILL in the window: the cluster exists, its condor-submit report never landed."""
    from ewms_server.ops import taskforces as taskforce_ops
    from tms.config import from_env

    jobs = os.path.join(job_root(tmp_path.name), "jobs")
    uids = uid_range()
    tms_log = str(tmp_path / "tms.log")
    arrived, real_submit = asyncio.Event(), taskforce_ops.condor_submit

    async def never_lands(*_args: Any) -> None:  # the report is held until its sender is dead
        arrived.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(taskforce_ops, "condor_submit", never_lands)
    async with running_server(
        cluster_locations={"local": "test-schedd"}, env={"EWMS_STARTER_LEASE_S": "1"}
    ) as srv:
        user = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
        wf = await user.request("POST", "/v1/workflows", workflow_body("sleep"))
        uuid = wf["taskforces"][0]["taskforce_uuid"]
        cfg = from_env({"EWMS_TMS_SERVER_URL": srv.url, "EWMS_TMS_TOKEN": "x", **local_settings(jobs, uids)})
        clusters = os.path.join(cfg.local_state_dir, "clusters", "*.json")

        first = start_tms(srv, jobs, tms_log, uids)
        second = None
        try:
            await asyncio.wait_for(arrived.wait(), 30)
            first.kill()  # submitted, report in flight: the worst moment to die
            first.wait()
            assert len(glob.glob(clusters)) == 1
            assert (await user.request("GET", f"/v1/taskforces/{uuid}"))["phase"] == "pending-starter"

            monkeypatch.setattr(taskforce_ops, "condor_submit", real_submit)
            second = start_tms(srv, jobs, tms_log, uids)
            tf = await wait_for(user, uuid, lambda t: t["phase"] == "condor-submit")
            assert len(glob.glob(clusters)) == 1
            with open(glob.glob(clusters)[0]) as f:
                assert json.load(f)["cluster_id"] == tf["cluster_id"]
            with open(tms_log) as f:
                assert "already has cluster" in f.read()

            await user.request("POST", f"/v1/workflows/{wf['workflow']['workflow_id']}/actions/finished")
            await wait_for(user, uuid, lambda t: t["phase"] == "condor-complete", timeout=40)
            assert len(glob.glob(clusters)) == 1
        finally:
            for proc in (first, second):
                if proc is not None:
                    stop_process(proc)


async def test_what_no_backend_can_start_ends_submit_failed_with_its_reason(tmp_path: Any) -> None:
    """Issue 9, finding 2: a stored taskforce the API would now refuse (written here straight
    into the store, as by an older server) is not a supervisor dying with its job RUNNING
    forever: each submit fails with the reason, and the server gives up after its attempts."""
    jobs = os.path.join(job_root(tmp_path.name), "jobs")
    uids = uid_range()
    env = {"EWMS_STARTER_LEASE_S": "1", "EWMS_MAX_SUBMIT_ATTEMPTS": "2", "EWMS_SUBMIT_RETRY_DELAY_S": "0"}
    async with running_server(cluster_locations={"local": "test-schedd"}, env=env) as srv:
        user = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
        wf = await user.request("POST", "/v1/workflows", workflow_body("quick"))
        uuid = wf["taskforces"][0]["taskforce_uuid"]
        await srv.deps.store.update_where(
            "task_directives",
            {"task_id": wf["task_directives"][0]["task_id"]},
            Change(set={"task_image": "/bin/true\u0000"}),
        )
        tms = start_tms(srv, jobs, str(tmp_path / "tms.log"), uids)
        try:
            tf = await wait_for(user, uuid, lambda t: t["phase"] == "submit-failed")
        finally:
            stop_process(tms)
            user.close()
        failures = [e["context"] for e in tf["phase_change_log"] if not e["was_successful"]]
        assert len(failures) == 2 and all("task_image" in c and "NUL" in c for c in failures), failures
        assert not glob.glob(os.path.join(jobs, ".local-schedd", "clusters", "*.json"))  # nothing started
