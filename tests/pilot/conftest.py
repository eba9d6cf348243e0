"""Fixtures for pilot tests: a workflow activated on the real broker, and pilots as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pytest

from ewms_pilot.broker import connection_url
from ewms_pilot.envelope import ENVELOPE, unwrap, wrap
from ewms_server.broker.base import QueueAccess
from ewms_server.broker.rabbitmq import RabbitMQBrokerAdapter, RabbitMQSettings
from tests.conftest import BROKER_URL

REPO = Path(__file__).resolve().parents[2]
SQUARE = str(REPO / "resources" / "examples" / "tasks" / "square.py")
ECHO = str(Path(__file__).with_name("echo_task.py"))

CHIRP_RE = re.compile(r'^HTChirpEWMSPilot(\w+): "((?:[^"\\]|\\.)*)"$')


def adapter_for(delivery_limit: int) -> RabbitMQBrokerAdapter:
    return RabbitMQBrokerAdapter(
        RabbitMQSettings.from_env(
            {
                "EWMS_BROKER_URL": BROKER_URL,
                "EWMS_BROKER_TASK_DELIVERY_LIMIT": str(delivery_limit),
            }
        )
    )


async def _call(delivery_limit: int, method: str, *args: object) -> object:
    adapter = adapter_for(delivery_limit)
    try:
        return await getattr(adapter, method)(*args)
    finally:
        await adapter.close()


@dataclass
class Workflow:
    workflow_id: str
    access: dict[str, QueueAccess]
    tmp: Path
    auth_file: Path
    pilots: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def q(self) -> list[str]:
        return list(self.access)

    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        a = next(iter(self.access.values()))
        assert a.broker_address and a.auth_token
        conn = pika.BlockingConnection(pika.URLParameters(connection_url(a.broker_address, a.auth_token)))
        ch = conn.channel()
        ch.confirm_delivery()
        return ch

    def publish(self, mqid: str, bodies: list[bytes], fmt: str = ENVELOPE) -> None:
        """Each body as a message in format `fmt` (by default each body is the text `data`)."""
        ch = self.channel()
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for body in bodies:
            ch.basic_publish("", mqid, wrap(body, fmt), props, mandatory=True)
        ch.connection.close()

    def drain(self, queue: str, expect: int = 0, timeout: float = 10, fmt: str = ENVELOPE) -> list[bytes]:
        """Take messages (acked) until `expect` of them or until the queue stays empty; return
        what each carries in format `fmt`."""
        return [unwrap(m, fmt) for m in self.drain_messages(queue, expect, timeout)]

    def drain_messages(self, queue: str, expect: int = 0, timeout: float = 10) -> list[bytes]:
        """Take messages (acked), as they are on the broker."""
        ch = self.channel()
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not expect or len(got) < expect):
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                if not expect:
                    break
                time.sleep(0.05)
            else:
                got.append(body)
        ch.connection.close()
        return got

    def env(self, **settings: str) -> dict[str, str]:
        base = {
            "EWMS_TASKFORCE_UUID": "TF-test",
            "EWMS_WORKFLOW_ID": self.workflow_id,
            "EWMS_PILOT_TASK_IMAGE": sys.executable,
            "EWMS_PILOT_TASK_ARGS": SQUARE,
            "EWMS_PILOT_QUEUE_INCOMING": self.q[0],
            "EWMS_PILOT_QUEUE_OUTGOING": self.q[1],
            "EWMS_PILOT_QUEUE_AUTH_FILE": str(self.auth_file),
            "EWMS_PILOT_RUNNER": "process",
            "EWMS_PILOT_CHIRP": "file",
            "EWMS_PILOT_CHIRP_FILE": str(self.tmp / "chirp.log"),
            "EWMS_PILOT_CHIRP_INTERVAL": "0.2",
            "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING": "1.5",
            "EWMS_PILOT_WORK_DIR": str(self.tmp),
        }
        keep = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
        keep["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), keep.get("PYTHONPATH")]))
        return {**keep, **base, **settings}

    def start_pilot(self, *, log_level: str = "INFO", **settings: str) -> subprocess.Popen[bytes]:
        n = len(self.pilots)
        with open(self.tmp / f"pilot{n}.out", "wb") as out, open(self.tmp / f"pilot{n}.err", "wb") as err:
            p = subprocess.Popen(
                [sys.executable, "-m", "ewms_pilot", "--log-level", log_level],
                env=self.env(**settings),
                stdout=out,
                stderr=err,
            )
        self.pilots.append(p)
        return p

    def run_pilot(self, timeout: float = 30, **settings: str) -> int:
        return self.start_pilot(**settings).wait(timeout)

    def stderr(self, n: int = 0) -> str:
        return (self.tmp / f"pilot{n}.err").read_text()

    def chirps(self, name: str = "chirp.log") -> list[tuple[str, str]]:
        path = self.tmp / name
        lines = path.read_text().splitlines() if path.exists() else []
        out = []
        for line in lines:
            m = CHIRP_RE.match(line)
            assert m and len(line) <= 1023, line
            out.append((m.group(1), m.group(2)))
        return out

    def last(self, attr: str) -> str | None:
        values = [v for a, v in self.chirps() if a == attr]
        return values[-1] if values else None

    def statuses(self) -> list[str]:
        return [v for a, v in self.chirps() if a == "Status"]


def make_workflow(tmp: Path, n_queues: int = 2, delivery_limit: int = 3) -> Workflow:
    wf = f"WF-test-{uuid.uuid4().hex[:10]}"
    mqids = [f"Q-test-{uuid.uuid4().hex[:10]}" for _ in range(n_queues)]
    access = asyncio.run(_call(delivery_limit, "activate_workflow", wf, mqids))
    assert isinstance(access, dict)
    auth_file = tmp / "auth.json"
    fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(
        fd,
        json.dumps(
            {
                m: {
                    "auth_token": a.auth_token,
                    "broker_type": a.broker_type,
                    "broker_address": a.broker_address,
                }
                for m, a in access.items()
            }
        ).encode(),
    )
    os.close(fd)
    return Workflow(wf, access, tmp, auth_file)


def teardown(w: Workflow) -> None:
    for p in w.pilots:
        if p.poll() is None:
            p.kill()
            p.wait()
    pid_dir = w.tmp / "pids"
    for pid_file in pid_dir.glob("*") if pid_dir.exists() else []:
        try:  # orphaned tasks of a SIGKILLed pilot
            os.killpg(int(pid_file.name), signal.SIGKILL)
        except ProcessLookupError:
            pass
    asyncio.run(_call(3, "deactivate_workflow", w.workflow_id, w.q))
    asyncio.run(_call(3, "delete_queues", w.workflow_id, w.q))


@pytest.fixture
def workflow(tmp_path: Path) -> Iterator[Workflow]:
    w = make_workflow(tmp_path)
    yield w
    teardown(w)


@pytest.fixture
def workflow_factory(tmp_path: Path) -> Iterator[object]:
    made: list[Workflow] = []

    def make(n_queues: int = 2, delivery_limit: int = 3) -> Workflow:
        sub = tmp_path / f"wf{len(made)}"
        sub.mkdir()
        made.append(make_workflow(sub, n_queues, delivery_limit))
        return made[-1]

    yield make
    for w in made:
        teardown(w)
