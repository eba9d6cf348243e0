"""Latency from a taskforce reaching pending-starter to its cluster being submitted (local backend).

A real ewms_server on loopback and a real ``ewms-tms`` subprocess (local backend, default
intervals; isolated -- a uid per taskforce -- when run as root, as the TMS would be). Creates workflows one after another and reads both moments from the taskforce's
``phase_change_log`` (pending-starter, then condor-submit: an upper bound on the submit time).
Prints ONE JSON line with p50/p90/max.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from rest_tools.client import RestClient  # noqa: E402

from ewms_server.testing import running_server  # noqa: E402

N = int(os.environ.get("BENCH_N", 20))
FAKE_PILOT = os.path.join(REPO, "tests", "tms", "fake_pilot.py")
BODY = {
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
                "environment": {"FAKE_PILOT_MODE": "quick"},
                "input_files": [],
            },
            "worker_config": {
                "do_transfer_worker_stdouterr": False,
                "max_worker_runtime": 600,
                "n_cores": 1,
                "priority": 50,
                "worker_disk": "1G",
                "worker_memory": "512M",
            },
            "n_workers": 1,
        }
    ],
    "public_queue_aliases": ["in", "out"],
}


def _ts(tf: dict, phase: str) -> float | None:
    for entry in tf.get("phase_change_log", []):
        if entry["target_phase"] == phase and entry["was_successful"]:
            return float(entry["timestamp"])
    return None


ISOLATED = os.geteuid() == 0


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o711)  # job uids pass through to their directories
        first = 5_000_000 + os.getpid() % 1000 * 1000
        async with running_server(cluster_locations={"local": "bench-schedd"}) as srv:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
                "PYTHONPATH": REPO,
                "EWMS_TMS_SERVER_URL": srv.url,
                "EWMS_TMS_TOKEN": srv.token(role="system-tms", sub="tms"),
                "EWMS_TMS_SCHEDD": "bench-schedd",
                "EWMS_TMS_BACKEND": "local",
                "EWMS_TMS_JOB_EVENT_LOG_DIR": os.path.join(d, "jobs"),
                # stdlib only: Debian's python, which any job uid can run
                "EWMS_TMS_LOCAL_JOB_COMMAND": f"/usr/bin/python3 {FAKE_PILOT}",
                "EWMS_TMS_LOCAL_UID_RANGE": f"{first}-{first + 999}",
                "EWMS_TMS_LOCAL_SINGLE_TENANT": "false" if ISOLATED else "true",
                "EWMS_TMS_LOG_LEVEL": "WARNING",
            }
            tms = subprocess.Popen(
                [sys.executable, "-m", "tms"],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            user = RestClient(srv.url, srv.token(role="user", sub="alice"), retries=0)
            latencies = []
            try:
                for _ in range(N):
                    wf = await user.request("POST", "/v1/workflows", BODY)
                    uuid = wf["taskforces"][0]["taskforce_uuid"]
                    deadline = time.monotonic() + 120
                    while True:
                        tf = await user.request("GET", f"/v1/taskforces/{uuid}")
                        start, submitted = _ts(tf, "pending-starter"), _ts(tf, "condor-submit")
                        if start is not None and submitted is not None:
                            latencies.append(submitted - start)
                            break
                        if time.monotonic() > deadline:
                            raise SystemExit(f"taskforce {uuid} not submitted within 120s")
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(0.3)  # let the TMS go idle between workflows
            finally:
                tms.send_signal(signal.SIGTERM)
                await asyncio.to_thread(tms.wait, 15)
                user.close()
    q = statistics.quantiles(latencies, n=10)
    print(
        json.dumps(
            {
                "benchmark": "tms_start",
                "backend": "local",
                "isolated": ISOLATED,
                "n": len(latencies),
                "p50_s": round(statistics.median(latencies), 3),
                "p90_s": round(q[8], 3),
                "max_s": round(max(latencies), 3),
                "target_p50_s": 1.0,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
