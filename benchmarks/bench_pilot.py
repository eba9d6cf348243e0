"""Benchmark: tasks/s through N pilots (trivial task) vs the broker's raw rate.

`--runner process` (default): the per-message runner, one exec of a shell task per message.
`--runner warm`: EWMS_PILOT_TASK_MODE=warm, one Python echo task (ewms_pilot.worker.serve) per
concurrent task, kept warm.

Prints ONE JSON line. Both sides use the same broker, the same queue kind (what the RabbitMQ
adapter declares: durable quorum queues) and the same delivery guarantees (persistent messages,
publisher confirms, manual acks). Loopback only; bounded by --timeout; cleans up its queues.
The pilots read and write the default message format (oms-mqclient's envelope); with
--envelope-vs-raw each round also runs the pilots on raw messages (EWMS_PILOT_MESSAGE_FORMAT=raw),
in alternating order, to measure what the envelope costs.

    python benchmarks/bench_pilot.py [--tasks 2000] [--pilots 2] [--concurrency 4] [--runner warm]
                                     [--envelope-vs-raw]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import pika

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ewms_pilot.broker import connection_url
from ewms_pilot.envelope import ENVELOPE, RAW, encode, unwrap, wrap
from ewms_server.broker.base import QueueAccess
from ewms_server.broker.rabbitmq import RabbitMQBrokerAdapter, RabbitMQSettings

# one exec per task (dash builtins only): the cost measured is the pilot's, not the task's
TRIVIAL_TASK = ("/bin/sh", """-c 'read -r x < "$EWMS_TASK_INFILE"; echo "$x" > "$EWMS_TASK_OUTFILE"'""")
# one warm worker per concurrent task: the cost measured is the pilot's and the protocol's
WARM_TASK = (sys.executable, """-c 'from ewms_pilot.worker import serve; serve(lambda data: data)'""")
TASKS = {"process": TRIVIAL_TASK, "warm": WARM_TASK}
TARGETS = {"process": 0.5, "warm": 0.8}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def channel_for(access: QueueAccess) -> pika.adapters.blocking_connection.BlockingChannel:
    assert access.broker_address and access.auth_token
    conn = pika.BlockingConnection(
        pika.URLParameters(connection_url(access.broker_address, access.auth_token))
    )
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def publish(ch, queue: str, n: int, fmt: str = RAW) -> None:  # type: ignore[no-untyped-def]
    props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    for i in range(n):
        ch.basic_publish("", queue, wrap(str(i).encode(), fmt), props)  # waits for the confirm


def consume(ch, queue: str, n: int, deadline: float) -> int:  # type: ignore[no-untyped-def]
    ch.basic_qos(prefetch_count=100)
    got = 0
    for method, _props, _body in ch.consume(queue, inactivity_timeout=1):
        if method is not None:
            ch.basic_ack(method.delivery_tag)
            got += 1
        if got >= n or time.monotonic() > deadline:
            break
    ch.cancel()
    return got


def envelope_cpu_us() -> float:
    """What the pilot does to a message for the envelope (unwrap the input, wrap the output),
    in CPU microseconds per task: the load-independent side of the envelope's cost."""
    message = encode("123")
    batches = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(2000):
            unwrap(message, ENVELOPE)
            wrap(b"123\n", ENVELOPE)
        batches.append((time.process_time() - t0) / 2000 * 1e6)
    return statistics.median(batches)


def raw_rate(access: QueueAccess, n: int, deadline: float) -> float:
    ch = channel_for(access)
    t0 = time.monotonic()
    publish(ch, access.mqid, n)
    got = consume(ch, access.mqid, n, deadline)
    elapsed = time.monotonic() - t0
    ch.connection.close()
    return got / elapsed


def pilot_rate(
    accesses: dict[str, QueueAccess],
    q_in: str,
    q_out: str,
    args: argparse.Namespace,
    deadline: float,
    fmt: str = ENVELOPE,
) -> tuple[float, int]:
    ch = channel_for(accesses[q_in])
    publish(ch, q_in, args.tasks, fmt)  # preloaded, not timed
    with tempfile.TemporaryDirectory(prefix="ewms-bench-") as tmp:
        auth_file = os.path.join(tmp, "auth.json")
        fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(
            fd,
            json.dumps(
                {
                    m: {
                        "auth_token": a.auth_token,
                        "broker_type": a.broker_type,
                        "broker_address": a.broker_address,
                    }
                    for m, a in accesses.items()
                }
            ).encode(),
        )
        os.close(fd)
        env = dict(
            os.environ,
            EWMS_PILOT_TASK_IMAGE=TASKS[args.runner][0],
            EWMS_PILOT_TASK_ARGS=TASKS[args.runner][1],
            EWMS_PILOT_TASK_MODE="warm" if args.runner == "warm" else "per-message",
            EWMS_PILOT_QUEUE_INCOMING=q_in,
            EWMS_PILOT_QUEUE_OUTGOING=q_out,
            EWMS_PILOT_QUEUE_AUTH_FILE=auth_file,
            EWMS_PILOT_RUNNER="process",
            EWMS_PILOT_MESSAGE_FORMAT=fmt,
            EWMS_PILOT_CHIRP="none",
            EWMS_PILOT_MAX_CONCURRENT_TASKS=str(args.concurrency),
            EWMS_PILOT_PREFETCH=str(args.concurrency * 2),
            EWMS_PILOT_TIMEOUT_QUEUE_INCOMING="2",
            EWMS_PILOT_WORK_DIR=tmp,
            PYTHONPATH=os.pathsep.join(
                filter(
                    None,
                    [
                        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        os.environ.get("PYTHONPATH"),
                    ],
                )
            ),
        )
        t0 = time.monotonic()
        pilots = [
            subprocess.Popen(
                [sys.executable, "-m", "ewms_pilot", "--log-level", "WARNING"],
                env=env,
                stdout=subprocess.DEVNULL,
            )
            for _ in range(args.pilots)
        ]
        try:
            got = consume(ch, q_out, args.tasks, deadline)
            elapsed = time.monotonic() - t0
        finally:
            for p in pilots:
                p.terminate()
            for p in pilots:
                p.wait(timeout=30)
    ch.connection.close()
    return got / elapsed, got


async def amain(args: argparse.Namespace) -> dict[str, object]:
    settings = RabbitMQSettings.from_env(
        os.environ
        | {"EWMS_BROKER_URL": os.environ.get("EWMS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")}
    )
    if urlsplit(settings.broker_url).hostname not in LOOPBACK:
        raise SystemExit("bench_pilot.py runs against a loopback broker only")
    adapter = RabbitMQBrokerAdapter(settings)
    run = uuid.uuid4().hex[:8]
    wf = f"WF-bench-{run}"
    q_raw, q_in, q_out = f"Q-bench-{run}-raw", f"Q-bench-{run}-in", f"Q-bench-{run}-out"
    deadline = time.monotonic() + args.timeout
    try:
        accesses = await adapter.activate_workflow(wf, [q_raw, q_in, q_out])
        # the broker's own rate swings up to 2x between runs (quorum-queue fsyncs): alternate
        # raw and pilot rounds and compare medians
        raws, pilots, dones = [], [], []
        raw_format: list[float] = []  # --envelope-vs-raw: the pilots on raw messages
        pilot_accesses = {q_in: accesses[q_in], q_out: accesses[q_out]}
        for i in range(args.rounds):
            raws.append(await asyncio.to_thread(raw_rate, accesses[q_raw], args.tasks, deadline))
            formats = [ENVELOPE, RAW] if args.envelope_vs_raw else [ENVELOPE]
            for fmt in formats if i % 2 == 0 else formats[::-1]:  # alternate which goes first
                rate, got = await asyncio.to_thread(
                    pilot_rate, pilot_accesses, q_in, q_out, args, deadline, fmt
                )
                (pilots if fmt == ENVELOPE else raw_format).append(rate)
                dones.append(got)
        raw, pilot, done = statistics.median(raws), statistics.median(pilots), min(dones)
    finally:
        await adapter.deactivate_workflow(wf, [q_raw, q_in, q_out])
        await adapter.delete_queues(wf, [q_raw, q_in, q_out])
        await adapter.close()
    result: dict[str, object] = {
        "benchmark": "bench_pilot",
        "tasks": args.tasks,
        "tasks_done": done,
        "pilots": args.pilots,
        "concurrency_per_pilot": args.concurrency,
        "task": " ".join(TASKS[args.runner]),
        "runner": args.runner,
        "queue_type": "quorum",
        "pilot_tasks_per_s": round(pilot, 1),
        "raw_publish_consume_msgs_per_s": round(raw, 1),
        "rounds": args.rounds,
        "pilot_rounds_tasks_per_s": [round(x, 1) for x in pilots],
        "raw_rounds_msgs_per_s": [round(x, 1) for x in raws],
        "ratio": round(pilot / raw, 3),
        "target_ratio": TARGETS[args.runner],
        "meets_target": pilot / raw >= TARGETS[args.runner],
        "timed_out": done < args.tasks,
        "cpus": os.cpu_count(),
        "message_format": ENVELOPE,
    }
    if raw_format:
        paired = [e / r for e, r in zip(pilots, raw_format, strict=True)]  # same round, same load
        cost = 1 - pilot / statistics.median(raw_format)
        result |= {
            "pilot_raw_format_tasks_per_s": round(statistics.median(raw_format), 1),
            "pilot_raw_format_rounds_tasks_per_s": [round(x, 1) for x in raw_format],
            "envelope_cost": round(cost, 3),
            "envelope_to_raw_rounds": [round(x, 3) for x in paired],
            "envelope_to_raw_median": round(statistics.median(paired), 3),
            "envelope_to_raw_spread": round(max(paired) - min(paired), 3),
            "envelope_cpu_us_per_task": round(envelope_cpu_us(), 1),
            "envelope_cost_target": 0.10,
            "envelope_meets_target": cost < 0.10,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--pilots", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="tasks at once per pilot")
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/pilot rounds (medians)")
    parser.add_argument("--timeout", type=float, default=240, help="overall bound, seconds")
    parser.add_argument(
        "--envelope-vs-raw",
        action="store_true",
        help="each round also runs the pilots on raw messages: reports what the envelope costs",
    )
    parser.add_argument(
        "--runner", choices=sorted(TASKS), default="process", help="per-message process, or warm"
    )
    print(json.dumps(asyncio.run(amain(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
