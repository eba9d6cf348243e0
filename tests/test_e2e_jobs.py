"""Jobs end to end, every part real (issue 13): the server with the RabbitMQ adapter,
``ewms-tms`` with the local backend, the real pilot in job mode fetching and uploading over
HTTP with its job's token, and the ``ewms_client`` jobs client.

Three jobs of alice's at once (her quota): one that works (its zip, listing and one file),
one whose run.sh exits 7, one that sleeps until it is deleted; a fourth is a 429; bob gets a
404 for alice's job.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

from ewms_client.client import ClientError
from ewms_client.jobs import JobsClient, Part
from ewms_server.testing import running_server
from tests.client.cli import cli_env, ewms
from tests.conftest import wait_until
from tests.processes import stop_process
from tests.test_e2e_workflow import (
    BROKER_URL,
    delete_broker_leftovers,
    job_processes,
    kill_pids,
    start_tms,
    supervisor_pids,
)
from tests.tms.isolation import job_root

SCHEDD = "e2e-jobs-schedd"
BUDGET_S = 150
WORKS = b"""set -e
tr a-z A-Z < data/in.txt > upper.txt
mkdir -p sub && printf made > sub/x.txt
echo to-stdout
echo to-stderr >&2
"""
FAILS = b"echo about to fail >&2\nexit 7\n"
SLEEPS = b"echo started > started.txt\nexec sleep 300\n"


def parts(script: bytes, *extra: Part) -> list[Part]:
    return [Part("file", "run.sh", data=script), *extra, Part("max_runtime", data=b"120")]


async def test_jobs_zip_listing_failure_cancel_quota_and_isolation(tmp_path: Path) -> None:
    jobs_dir = Path(job_root(tmp_path.name)) / "jobs"
    tms = None
    wf_ids: list[str] = []
    async with running_server(
        cluster_locations={"local": SCHEDD},
        broker_env={"EWMS_BROKER_URL": BROKER_URL},
        env={
            "EWMS_LOOP_INTERVAL_S": "0.5",
            "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
            "EWMS_USER_MAX_ACTIVE_JOBS": "3",
            "EWMS_JOBS_PILOT_IDLE_S": "60",
        },
    ) as srv:
        alice = JobsClient(srv.url, srv.token(sub="alice"))
        bob = JobsClient(srv.url, srv.token(sub="bob"))

        async def call(fn: Any, *args: Any) -> Any:
            return await asyncio.to_thread(fn, *args)  # the server runs on this loop

        async def status_is(jid: str, *states: str) -> dict[str, Any] | None:
            st = await call(alice.status, jid)
            return st if st["status"] in states else None

        try:
            async with asyncio.timeout(BUDGET_S):
                works = await call(alice.submit, parts(WORKS, Part("file", "data/in.txt", data=b"hello\n")))
                fails = await call(alice.submit, parts(FAILS))
                sleeps = await call(alice.submit, parts(SLEEPS))
                ids = [works["id"], fails["id"], sleeps["id"]]
                assert {w["status"] for w in (works, fails, sleeps)} == {"Queued"}
                # the quota: a fourth unfinished job is refused before its upload is read
                try:
                    await call(alice.submit, parts(WORKS))
                    raise AssertionError("a fourth job was accepted")
                except ClientError as e:
                    assert str(e).startswith("429") and "EWMS_USER_MAX_ACTIVE_JOBS" in str(e)
                for jid in ids:
                    wf_ids.append((await call(alice.status, jid))["workflow_id"])

                tms = start_tms(srv, jobs_dir, tmp_path / "tms.log", schedd=SCHEDD)

                # the job that works: Completed, exit 0, its zip, listing and one file
                done = await wait_until(lambda: status_is(ids[0], "Completed", "Failed"), 90, 0.3)
                assert (done["status"], done["exit_code"]) == ("Completed", 0), done
                listed = {f["path"]: f["size"] for f in await call(alice.files, ids[0])}
                assert listed == {"upper.txt": 6, "sub/x.txt": 4, "stdout.txt": 10, "stderr.txt": 10}
                one = io.BytesIO()
                await call(alice.download, ids[0], one, "upper.txt")
                assert one.getvalue() == b"HELLO\n"
                whole = io.BytesIO()
                await call(alice.download, ids[0], whole)
                z = zipfile.ZipFile(whole)
                assert {n: z.read(n) for n in z.namelist()} == {
                    "run.sh": WORKS,
                    "data/in.txt": b"hello\n",
                    "upper.txt": b"HELLO\n",
                    "sub/x.txt": b"made",
                    "stdout.txt": b"to-stdout\n",
                    "stderr.txt": b"to-stderr\n",
                }

                # the failing one: Failed with run.sh's exit code, its stderr in the zip
                failed = await wait_until(lambda: status_is(ids[1], "Completed", "Failed"), 90, 0.3)
                assert (failed["status"], failed["exit_code"]) == ("Failed", 7), failed
                assert "exited with code 7" in failed["message"]
                whole = io.BytesIO()
                await call(alice.download, ids[1], whole)
                assert zipfile.ZipFile(whole).read("stderr.txt") == b"about to fail\n"

                # bob: every route of alice's job is a 404, and his list is empty
                for path in (
                    f"/v1/jobs/{ids[0]}",
                    f"/v1/jobs/{ids[0]}/files",
                    f"/v1/jobs/{ids[0]}/files/upper.txt",
                ):
                    r = await call(bob.session.get, srv.url + path)
                    assert r.status_code == 404, path
                assert await call(bob.jobs) == []

                # the sleeping one: Running, then deleted: cancelled, every byte gone, a 404
                await wait_until(lambda: status_is(ids[2], "Running"), 90, 0.3)
                await call(alice.delete, ids[2])
                r = await call(alice.session.get, f"{srv.url}/v1/jobs/{ids[2]}")
                assert r.status_code == 404
                assert not (Path(srv.server.cfg.data_dir) / "files" / ids[2]).exists()
                assert await srv.deps.store.count("jobs", {"job_id": ids[2]}) == 0
                wf = await srv.deps.store.get("workflows", {"workflow_id": wf_ids[2]})
                assert wf is not None and wf["deactivated"] == "ABORTED"

                async def pilots_gone() -> bool:
                    tfs = await srv.deps.store.find("taskforces", {"workflow_id": {"$in": wf_ids}})
                    return all(tf["phase"] == "condor-complete" for tf in tfs)

                await wait_until(pilots_gone, 60, 0.3)
                assert [j["id"] for j in await call(alice.jobs)] == ids[:2]

                # the CLI: upload with a progress line, wait, the zip written
                (tmp_path / "cli").mkdir()
                (tmp_path / "cli" / "count.sh").write_text("wc -c < big.bin > size.txt\n")
                (tmp_path / "cli" / "big.bin").write_bytes(b"z" * 5_000_000)
                code, out, err = await ewms(
                    cli_env(srv), "job", "run", "count.sh", "big.bin", "--wait", "--out", "r.zip",
                    "--progress", "--poll", "0.3", timeout=90, cwd=tmp_path / "cli",
                )  # fmt: skip
                assert code == 0, err
                assert out.strip().startswith("JB-") and "upload: 100.0%" in err and "Completed" in err
                z = zipfile.ZipFile(tmp_path / "cli" / "r.zip")
                assert z.read("size.txt") == b"5000000\n" and len(z.read("big.bin")) == 5_000_000
                wf_ids.append((await call(alice.status, out.strip()))["workflow_id"])

                # no runner token in any file the TMS, its jobs or the server wrote
                for root in (jobs_dir, tmp_path, Path(srv.server.cfg.data_dir)):
                    for f in root.rglob("*"):
                        if f.is_file():
                            assert b"ewmsjob_" not in f.read_bytes(), f
        finally:
            if tms is not None:
                stop_process(tms)
            kill_pids(supervisor_pids(jobs_dir))
            tfs = await srv.deps.store.find("taskforces", {"workflow_id": {"$in": wf_ids}})
            kill_pids(job_processes({tf["taskforce_uuid"] for tf in tfs}))
            for c in (alice, bob):
                c.close()
            for wid in wf_ids:
                await asyncio.to_thread(delete_broker_leftovers, wid)
