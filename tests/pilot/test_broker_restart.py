"""Fault test: the broker restarts (stop_app / start_app) while a pilot works; nothing is lost.

This restarts the machine's shared RabbitMQ for a couple of seconds; `finally` restores it.
"""

from __future__ import annotations

import json
import subprocess
import time

import requests

from ewms_server.broker.rabbitmq import RabbitMQSettings

from .conftest import BROKER_URL, ECHO, Workflow


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def wait_until_broker_serves(timeout: float = 60) -> None:
    s = RabbitMQSettings.from_env({"EWMS_BROKER_URL": BROKER_URL})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{s.management_url}/api/overview", auth=s.admin_auth, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise AssertionError("broker did not come back")


def test_broker_restart_while_a_pilot_runs(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    bodies = [f"m{i}".encode() for i in range(30)]
    workflow.publish(q_in, bodies)
    pilot = workflow.start_pilot(
        EWMS_PILOT_TASK_ARGS=ECHO,
        EWMS_PILOT_MAX_CONCURRENT_TASKS="2",
        EWMS_PILOT_TASK_ENV_JSON=json.dumps({"TEST_SLEEP": "0.1"}),
        EWMS_PILOT_BROKER_RECONNECT_TIMEOUT="60",
        EWMS_PILOT_TIMEOUT_QUEUE_INCOMING="3",
    )
    deadline = time.monotonic() + 20
    while int(workflow.last("TasksSuccess") or 0) < 4:
        assert time.monotonic() < deadline and pilot.poll() is None
        time.sleep(0.05)
    try:
        rabbitmqctl("stop_app")
        time.sleep(1.5)
    finally:
        rabbitmqctl("start_app")
        wait_until_broker_serves()

    assert pilot.wait(90) == 0
    assert "reconnecting" in workflow.stderr()
    assert workflow.statuses()[-1] == "Done"
    outputs = workflow.drain(q_out)
    assert set(outputs) == set(bodies)  # at least once: a task cut off may have run twice
    assert workflow.drain(q_in) == [] and workflow.drain(f"{q_in}.dead-letter") == []
