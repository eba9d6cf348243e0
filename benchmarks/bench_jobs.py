"""Benchmark of jobs (issue 13): file transfer MB/s beside a bare Tornado streaming handler,
and trivial jobs per second end to end beside raw workflow message throughput.

Prints ONE JSON line (progress goes to stderr). Run from the repo root:

    python benchmarks/bench_jobs.py                 # 1024 MB transfers, 8 jobs, 200 messages
    python benchmarks/bench_jobs.py --quick         # 256 MB, 4 jobs, 100 messages
    python benchmarks/bench_jobs.py --no-e2e        # transfers only (no broker, no TMS)

Transfers (`--mb` MB, loopback, one client, both servers as subprocesses of this script):
- `bare`: a bare Tornado server, a @stream_request_body handler writing each chunk to a file
  (upload), and a handler writing a file back in 1 MiB chunks with its Content-Length,
  flushing each (download);
- `ewms`: the EWMS server (SQLite, the directory file cache): `POST /v1/jobs` multipart with
  run.sh and one big file (upload); the job's runner `PUT` of an output of the same size
  (runner upload); `GET /v1/jobs/{id}/files/{path}` (download) and the zip (zip download).
  The runner's token comes from the job's message, which a recording broker adapter writes
  to a file.
`ratio_*` = ewms MB/s / bare MB/s (target >= 0.7). The zip is sent without a length
(chunked), which costs the client (requests decodes chunks in Python); `ewms_upload_rss_growth_mb` = peak RSS of
the EWMS server during its upload - RSS before (sampled every 20 ms).

End to end (`--no-e2e` skips it; RabbitMQ at EWMS_BROKER_URL, `ewms-tms` with the local
backend, real pilots): `jobs_per_s` = `--jobs` jobs of `true`, submitted at once, from the
first submit until all are Completed (each job is a workflow with its own pilot);
`workflow_msgs_per_s` = `--messages` trivial messages through one workflow of one pilot,
from the first push until the last result is pulled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.bench_upload_memory import wait_ready  # noqa: E402
from tests.processes import PeakRSS  # noqa: E402
from tests.server.server_process import free_port  # noqa: E402

MIB = 1 << 20
SECRET = "bench-jobs-secret-" + "x" * 32
TARGET_RATIO = 0.7


def log(*a: Any) -> None:
    print("[bench_jobs]", *a, file=sys.stderr, flush=True)


# -- the servers (subprocesses of this script) --------------------------------------------


def serve_bare(port: int, directory: str) -> None:
    import tornado.httpserver
    import tornado.web

    @tornado.web.stream_request_body
    class Up(tornado.web.RequestHandler):
        def prepare(self) -> None:
            self.f = open(os.path.join(directory, "up.bin"), "wb")

        def data_received(self, chunk: bytes) -> None:
            self.f.write(chunk)

        def post(self) -> None:
            self.f.close()
            self.write({"ok": True})

    class Ready(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"ok": True})

    class Down(tornado.web.RequestHandler):
        async def get(self) -> None:
            path = os.path.join(directory, "up.bin")
            self.set_header("Content-Length", str(os.path.getsize(path)))
            with open(path, "rb") as f:
                while chunk := f.read(MIB):
                    self.write(chunk)
                    await self.flush()

    async def main() -> None:
        app = tornado.web.Application([(r"/", Ready), (r"/up", Up), (r"/down", Down)])
        tornado.httpserver.HTTPServer(app, max_body_size=1 << 40).listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_ewms(port: int, directory: str, messages: str) -> None:
    from ewms_server.broker.null import NullBrokerAdapter
    from ewms_server.config import Config
    from ewms_server.server import Server

    class RecordingBroker(NullBrokerAdapter):
        """Queues that exist; each published message appended to `messages`, one per line."""

        async def publish(self, workflow_id: str, mqid: str, payload: bytes) -> None:
            with open(messages, "ab") as f:
                f.write(payload + b"\n")

    async def main() -> None:
        cfg = Config.from_env(
            {
                "EWMS_AUTH_SECRET": SECRET,
                "EWMS_REST_PORT": str(port),
                "EWMS_DATA_DIR": directory,
                "EWMS_CLUSTER_LOCATIONS": '{"local": "bench-schedd"}',
                "EWMS_JOBS_MAX_UPLOAD_BYTES": str(1 << 40),
                "EWMS_USER_MAX_ACTIVE_JOBS": "0",
                "EWMS_HTTP_BODY_TIMEOUT_S": "600",
                "EWMS_LOOP_INTERVAL_S": "0.2",
                "EWMS_LOG_LEVEL": "WARNING",
            }
        )
        server = Server(cfg, broker=RecordingBroker())
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


def spawn(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdin=subprocess.DEVNULL)


# -- transfers ----------------------------------------------------------------------------

PIECE = bytes(range(256)) * (MIB // 256)


class Payload:
    """`head`, then `mb` MiB made as they are sent, then `tail`; its length is known."""

    def __init__(self, mb: int, head: bytes = b"", tail: bytes = b"") -> None:
        self.mb, self.head, self.tail = mb, head, tail

    def __len__(self) -> int:
        return len(self.head) + self.mb * MIB + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        for _ in range(self.mb):
            yield PIECE
        yield self.tail


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def download(url: str, headers: dict[str, str]) -> int:
    n = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(MIB):
            n += len(chunk)
    return n


def transfers(mb: int, rounds: int) -> dict[str, Any]:
    from ewms_server.auth import mint_token

    tmp = tempfile.mkdtemp(prefix="bench-jobs-")
    bare_port, ewms_port = free_port(), free_port()
    messages = os.path.join(tmp, "messages.jsonl")
    bare = spawn("--serve-bare", str(bare_port), tmp)
    ewms = spawn("--serve-ewms", str(ewms_port), os.path.join(tmp, "data"), messages)
    out: dict[str, list[float]] = {k: [] for k in ("bare_up", "bare_down", "up", "runner_up", "down", "zip")}
    growth: list[float] = []
    try:
        bare_url, url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{ewms_port}"
        wait_ready(bare_url + "/", bare)
        wait_ready(url + "/v1/health", ewms)
        auth = {"Authorization": f"Bearer {mint_token(SECRET, sub='bench', role='user')}"}
        for i in range(rounds):  # alternating order: the machine's other load hits both alike
            order = ("bare", "ewms") if i % 2 == 0 else ("ewms", "bare")
            for which in order:
                if which == "bare":
                    dt, r = timed(lambda: requests.post(bare_url + "/up", data=Payload(mb), timeout=600))
                    r.raise_for_status()
                    out["bare_up"].append(mb / dt)
                    dt, n = timed(lambda: download(bare_url + "/down", {}))
                    assert n == mb * MIB
                    out["bare_down"].append(mb / dt)
                    continue
                got = ewms_round(url, auth, mb, ewms.pid, messages)
                growth.append(got.pop("growth"))
                for k, v in got.items():
                    out[k].append(v)
            log(f"round {i + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in out.items()))
    finally:
        for p in (bare, ewms):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(k: str) -> float:
        return round(statistics.median(out[k]), 1)

    return {
        "bare_upload_mb_per_s": med("bare_up"),
        "ewms_upload_mb_per_s": med("up"),
        "ewms_runner_upload_mb_per_s": med("runner_up"),
        "bare_download_mb_per_s": med("bare_down"),
        "ewms_download_mb_per_s": med("down"),
        "ewms_zip_download_mb_per_s": med("zip"),
        "ratio_upload": round(med("up") / med("bare_up"), 2),
        "ratio_runner_upload": round(med("runner_up") / med("bare_up"), 2),
        "ratio_download": round(med("down") / med("bare_down"), 2),
        "ratio_zip_download": round(med("zip") / med("bare_down"), 2),
        "ewms_upload_rss_growth_mb": round(max(growth), 1),
        "rounds": {k: [round(x) for x in v] for k, v in out.items()},
    }


BOUNDARY = "bench-boundary"
HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="run.sh"\r\n\r\ntrue\n\r\n'
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
).encode()
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def ewms_round(url: str, auth: dict[str, str], mb: int, pid: int, messages: str) -> dict[str, float]:
    """One job through the EWMS server: upload (with the server's RSS sampled), the runner's
    output upload, the single-file download and the zip; MB/s of each, and the RSS growth."""
    hdrs = {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with PeakRSS(pid) as rss:
        dt_up, r = timed(
            lambda: requests.post(url + "/v1/jobs", data=Payload(mb, HEAD, TAIL), headers=hdrs, timeout=600)
        )
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    runner = {"Authorization": f"Bearer {wait_message(messages, jid)}"}
    base = f"{url}/v1/jobs/{jid}/runner"
    dt_runner, r = timed(
        lambda: requests.put(f"{base}/outputs/out.bin", data=Payload(mb), headers=runner, timeout=600)
    )
    assert r.status_code == 200, r.text
    r = requests.post(
        base + "/status", json={"state": "Completed", "exit_code": 0}, headers=runner, timeout=60
    )
    assert r.status_code == 200, r.text
    dt_down, n = timed(lambda: download(f"{url}/v1/jobs/{jid}/files/out.bin", auth))
    assert n == mb * MIB
    dt_zip, n = timed(lambda: download(f"{url}/v1/jobs/{jid}", auth))
    assert n > 2 * mb * MIB
    requests.delete(f"{url}/v1/jobs/{jid}", headers=auth, timeout=60)
    return {
        "up": mb / dt_up,
        "runner_up": mb / dt_runner,
        "down": mb / dt_down,
        "zip": 2 * mb / dt_zip,  # the zip holds the input and the output
        "growth": rss.growth,
    }


def wait_message(path: str, job_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, "rb") as f:
                for line in f:
                    msg = json.loads(line)
                    if msg["job_id"] == job_id:
                        return str(msg["token"])
        time.sleep(0.05)
    raise RuntimeError(f"no message for {job_id}")


# -- end to end ----------------------------------------------------------------------------


async def end_to_end(n_jobs: int, n_messages: int) -> dict[str, Any]:
    from ewms_client import queues
    from ewms_client.client import EWMSClient
    from ewms_client.jobs import JobsClient, Part
    from ewms_server.testing import running_server
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

    schedd = "bench-jobs-schedd"
    tmp = tempfile.mkdtemp(prefix="bench-jobs-e2e-")
    jobs_dir = os.path.join(job_root(os.path.basename(tmp)), "jobs")
    wf_ids: list[str] = []
    async with running_server(
        cluster_locations={"local": schedd},
        broker_env={"EWMS_BROKER_URL": BROKER_URL},
        env={
            "EWMS_LOOP_INTERVAL_S": "0.5",
            "EWMS_BROKER_QUEUE_DELETE_GRACE_S": "0",
            "EWMS_USER_MAX_ACTIVE_JOBS": "0",
            "EWMS_USER_MAX_ACTIVE_WORKFLOWS": "0",
            "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "0",
        },
    ) as srv:
        from pathlib import Path

        tms = start_tms(srv, Path(jobs_dir), Path(tmp) / "tms.log", schedd=schedd)
        jc = JobsClient(srv.url, srv.token(sub="bench"))
        wc = EWMSClient(srv.url, srv.token(sub="bench"))

        async def call(fn: Any, *args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kw)

        try:
            # raw workflow message throughput: one task, one pilot, trivial messages
            body = {
                "public_queue_aliases": ["in", "out"],
                "tasks": [{
                    "cluster_locations": ["local"],
                    "task_image": "/bin/sh",
                    "task_args": """-c 'cat "$EWMS_TASK_INFILE" > "$EWMS_TASK_OUTFILE"'""",
                    "input_queue_aliases": ["in"], "output_queue_aliases": ["out"], "n_workers": 1,
                    "pilot_config": {"environment": {"EWMS_PILOT_MESSAGE_FORMAT": "raw",
                                                     "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "120"}},
                    "worker_config": {"do_transfer_worker_stdouterr": False, "max_worker_runtime": 3600,
                                      "n_cores": 1, "priority": 50, "worker_disk": "1G", "worker_memory": "1G"},
                }],
            }  # fmt: skip
            created = await call(wc.submit, body)
            wid = created["workflow"]["workflow_id"]
            wf_ids.append(wid)
            push_q = await call(wc.pick_queue, wid, "in", "push", 60)
            pull_q = await call(wc.pick_queue, wid, "out", "pull", 60)
            t0 = time.perf_counter()
            await call(queues.push, push_q, (str(i).encode() for i in range(n_messages)))
            got: list[bytes] = []
            assert await call(queues.pull, pull_q, got.append, n=n_messages, timeout=120) == n_messages
            msgs_per_s = n_messages / (time.perf_counter() - t0)
            await call(wc.finish, wid)
            log(f"workflow: {msgs_per_s:.1f} msgs/s")

            # trivial jobs, all at once
            t0 = time.perf_counter()
            ids = [
                (await call(jc.submit, [Part("file", "run.sh", data=b"true\n")]))["id"] for _ in range(n_jobs)
            ]
            for jid in ids:
                wf_ids.append((await call(jc.status, jid))["workflow_id"])
            deadline = time.monotonic() + 300
            while True:
                states = [(await call(jc.status, jid))["status"] for jid in ids]
                if all(s in ("Completed", "Failed", "Cancelled") for s in states):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"jobs not done: {states}")
                await asyncio.sleep(0.2)
            jobs_per_s = n_jobs / (time.perf_counter() - t0)
            assert states.count("Completed") == n_jobs, states
            log(f"jobs: {jobs_per_s:.2f} jobs/s")
        finally:
            stop_process(tms)
            kill_pids(supervisor_pids(Path(jobs_dir)))
            tfs = await srv.deps.store.find("taskforces", {"workflow_id": {"$in": wf_ids}})
            kill_pids(job_processes({tf["taskforce_uuid"] for tf in tfs}))
            jc.close()
            wc.close()
            for w in wf_ids:
                await asyncio.to_thread(delete_broker_leftovers, w)
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "jobs": n_jobs,
        "jobs_per_s": round(jobs_per_s, 2),
        "workflow_messages": n_messages,
        "workflow_msgs_per_s": round(msgs_per_s, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve-bare", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    p.add_argument("--serve-ewms", nargs=3, metavar=("PORT", "DIR", "MESSAGES"), help=argparse.SUPPRESS)
    p.add_argument("--mb", type=int, default=1024, help="MiB per transfer (default 1024)")
    p.add_argument("--rounds", type=int, default=3, help="transfer rounds (median reported)")
    p.add_argument("--jobs", type=int, default=8, help="trivial jobs end to end")
    p.add_argument("--messages", type=int, default=200, help="messages through the workflow")
    p.add_argument("--quick", action="store_true", help="256 MiB, 2 rounds, 4 jobs, 100 messages")
    p.add_argument("--no-e2e", action="store_true", help="transfers only")
    a = p.parse_args()
    if a.serve_bare:
        serve_bare(int(a.serve_bare[0]), a.serve_bare[1])
        return 0
    if a.serve_ewms:
        serve_ewms(int(a.serve_ewms[0]), a.serve_ewms[1], a.serve_ewms[2])
        return 0
    if a.quick:
        a.mb, a.rounds, a.jobs, a.messages = 256, 2, 4, 100
    load_start = os.getloadavg()[0]
    result: dict[str, Any] = {"benchmark": "bench_jobs", "mb": a.mb, **transfers(a.mb, a.rounds)}
    result["target_ratio"] = TARGET_RATIO
    if not a.no_e2e:
        result.update(asyncio.run(end_to_end(a.jobs, a.messages)))
    result["loadavg_start_end"] = [round(load_start, 1), round(os.getloadavg()[0], 1)]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
