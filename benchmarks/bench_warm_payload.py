"""Benchmark: how a warm worker's payload should travel — base64 in the JSON line, or files.

Two ways for a message to reach a warm worker: base64-encoded in its JSON line, or (the
per-message runner's way) in a file of the worker's private dir whose path the line names,
the output coming back the same way. This times a round trip of each, always one way, for
several payload sizes (asyncio pilot side over a unix socket, a Python echo worker on the
other), and then the warm runner itself (`WarmRunner` + `ewms_pilot.worker.serve`), which
inlines up to `INLINE_MAX` bytes and uses files above. Prints ONE JSON line.

    python benchmarks/bench_warm_payload.py [--seconds 1.0] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ewms_pilot.config import Command  # noqa: E402
from ewms_pilot.warm_protocol import INLINE_MAX, Task, decode_reply, encode_task  # noqa: E402
from ewms_pilot.warm_runner import WarmRunner  # noqa: E402

SIZES = (100, 10_000, 30_000, 100_000, 300_000, 1_000_000, 16_000_000)

# the worker side of both variants: echo every message back
PEER = r"""
import base64, json, os, socket, sys
from ewms_pilot.warm_protocol import decode_task, encode_result
mode, path = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX); s.connect(path)
for line in s.makefile("rb"):
    if mode == "base64":
        task = decode_task(line)
        s.sendall(encode_result(task.id, data=task.data))
    else:
        req = json.loads(line)
        with open(req["in"], "rb") as f:
            body = f.read()
        with open(req["out"], "wb") as f:
            f.write(body)
        s.sendall(b'{"id": %d, "ok": true}\n' % req["id"])
"""


async def variant(mode: str, sizes: tuple[int, ...], seconds: float, work: str) -> dict[str, float]:
    """Microseconds per round trip, by payload size."""
    path = os.path.join(work, f"{mode}.sock")
    got: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )
    server = await asyncio.start_unix_server(
        lambda r, w: got.set_result((r, w)), path, limit=256 * 1024 * 1024
    )
    peer = subprocess.Popen([sys.executable, "-c", PEER, mode, path], env=dict(os.environ))
    reader, writer = await got
    out: dict[str, float] = {}
    task_id = 0
    try:
        for size in sizes:
            body = os.urandom(size)
            n, t0 = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - t0 < seconds:
                task_id += 1
                if mode == "base64":
                    task = Task(task_id, "-", data=body)
                    writer.write(encode_task(task))
                    await writer.drain()
                    echoed = decode_reply(await reader.readuntil(b"\n"), task)
                else:
                    fin, fout = os.path.join(work, "in"), os.path.join(work, "out")
                    with open(fin, "wb") as f:
                        f.write(body)
                    writer.write((json.dumps({"id": task_id, "in": fin, "out": fout}) + "\n").encode())
                    await writer.drain()
                    await reader.readuntil(b"\n")
                    with open(fout, "rb") as f:
                        echoed = f.read()
                    os.unlink(fin)
                    os.unlink(fout)
                assert echoed == body
                n += 1
            out[str(size)] = round((time.perf_counter() - t0) / n * 1e6, 1)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await asyncio.to_thread(peer.wait, 10)
    return out


async def warm_runner(sizes: tuple[int, ...], seconds: float, work: str) -> dict[str, float]:
    runner = WarmRunner("process", work, 60)
    echo = Command(sys.executable, "-c 'from ewms_pilot.worker import serve; serve(lambda d: d)'", {})
    out: dict[str, float] = {}
    try:
        await runner.run_task(echo, b"warm-up", None)
        for size in sizes:
            body = os.urandom(size)
            n, t0 = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - t0 < seconds:
                assert await runner.run_task(echo, body, None) == body
                n += 1
            out[str(size)] = round((time.perf_counter() - t0) / n * 1e6, 1)
    finally:
        await runner.close()
    return out


async def amain(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="ewms-bench-warm-", dir=args.dir) as work:
        b64 = await variant("base64", SIZES, args.seconds, work)
        files = await variant("files", SIZES, args.seconds, work)
        warm = await warm_runner(SIZES, args.seconds, work)
    return {
        "benchmark": "bench_warm_payload",
        "payload_bytes": list(SIZES),
        "base64_line_us_per_round_trip": b64,
        "files_us_per_round_trip": files,
        "files_over_base64": {k: round(files[k] / b64[k], 2) for k in b64},
        "inline_max": INLINE_MAX,
        "warm_runner_us_per_round_trip": warm,
        "dir": args.dir or tempfile.gettempdir(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="per size and variant")
    parser.add_argument("--dir", default=None, help="where the files go (default: the temp dir)")
    print(json.dumps(asyncio.run(amain(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
