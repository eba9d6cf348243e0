"""The pilot on the real broker: message formats, EWMS's job environment, both address forms."""

from __future__ import annotations

import json
import os
import sys

from ewms_pilot.envelope import RAW, encode

from .conftest import ECHO, Workflow

# a task that writes its input back, followed by the names of the queue-token variables it sees
SHOW_TOKEN_VARS = (
    '-c \'import os; d = open(os.environ["EWMS_TASK_INFILE"]).read(); '
    'seen = ",".join(sorted(k for k in os.environ if "AUTH_TOKEN" in k)); '
    'open(os.environ["EWMS_TASK_OUTFILE"], "w").write(d + "|" + seen)\''
)


def test_json_data_reaches_the_task_as_json_and_text_as_text(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    sent = [encode({"n": [1, 2]}), encode(4), encode("plain text")]
    workflow.publish(q_in, sent, fmt=RAW)  # envelopes made here, as oms-mqclient makes them
    assert workflow.run_pilot(EWMS_PILOT_TASK_ARGS=ECHO) == 0
    assert sorted(workflow.drain(q_out)) == sorted([b'{"n": [1, 2]}', b"4", b"plain text"])


def test_the_raw_format_carries_binary_payloads(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    blob = bytes(range(256)) * 4
    workflow.publish(q_in, [blob], fmt=RAW)
    assert workflow.run_pilot(EWMS_PILOT_TASK_ARGS=ECHO, EWMS_PILOT_MESSAGE_FORMAT=RAW) == 0
    assert workflow.drain_messages(q_out) == [blob]


def test_an_unreadable_message_is_dead_lettered_at_once(workflow: Workflow) -> None:
    q_in, q_out = workflow.q  # delivery limit 3: no retry of a message no task can read
    workflow.publish(q_in, [b"3"], fmt=RAW)
    workflow.publish(q_in, [b"4"])
    assert workflow.run_pilot() == 0
    assert workflow.drain(q_out) == [b"16\n"]
    assert workflow.drain_messages(f"{q_in}.dead-letter") == [b"3"]
    assert workflow.last("TasksFailed") == "1" and workflow.last("TasksSuccess") == "1"
    assert (workflow.last("Error") or "").startswith("unreadable message: not an oms-mqclient envelope")


def test_a_binary_output_in_the_envelope_format_fails_the_task(workflow_factory) -> None:  # type: ignore
    w: Workflow = workflow_factory(delivery_limit=0)
    q_in, q_out = w.q
    w.publish(q_in, [b"x"])
    task = '-c \'import os; open(os.environ["EWMS_TASK_OUTFILE"], "wb").write(bytes([255, 0]))\''
    assert w.run_pilot(EWMS_PILOT_TASK_ARGS=task) == 0
    assert w.drain(q_out) == [] and w.drain(f"{q_in}.dead-letter") == [b"x"]
    assert (w.last("Error") or "").startswith("the task's output is not UTF-8 text")


def test_the_pilot_runs_on_ewms_job_environment(workflow_factory) -> None:  # type: ignore
    """EWMS's TMS gives the credentials per direction in the environment, lists joined by ';'."""
    w: Workflow = workflow_factory(n_queues=3)
    q_a, q_b, q_out = w.q
    w.publish(q_a, [b"a"])
    w.publish(q_b, [b"b"])
    a = w.access[q_a]
    assert a.auth_token and a.broker_address
    env = {
        "EWMS_PILOT_QUEUE_AUTH_FILE": "",
        "EWMS_PILOT_QUEUE_INCOMING": f"{q_a};{q_b}",
        "EWMS_PILOT_QUEUE_INCOMING_AUTH_TOKEN": a.auth_token,
        "EWMS_PILOT_QUEUE_INCOMING_BROKER_TYPE": "rabbitmq",
        "EWMS_PILOT_QUEUE_INCOMING_BROKER_ADDRESS": f"{a.broker_address};{a.broker_address}",
        "EWMS_PILOT_QUEUE_OUTGOING": q_out,
        "EWMS_PILOT_QUEUE_OUTGOING_AUTH_TOKEN": a.auth_token,
        "EWMS_PILOT_QUEUE_OUTGOING_BROKER_TYPE": "rabbitmq",
        "EWMS_PILOT_QUEUE_OUTGOING_BROKER_ADDRESS": a.broker_address,
    }
    assert w.run_pilot(EWMS_PILOT_TASK_IMAGE=sys.executable, EWMS_PILOT_TASK_ARGS=SHOW_TOKEN_VARS, **env) == 0
    assert sorted(w.drain(q_out)) == [b"a|", b"b|"]  # and no token variable reached the task
    assert w.statuses()[-1] == "Done"


def test_an_amqp_url_address_still_works(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    entries = json.loads(workflow.auth_file.read_text())
    for e in entries.values():
        user_host, vhost = e["broker_address"].rsplit("/", 1)
        e["broker_address"] = f"amqp://{user_host}/{vhost}"
    os.unlink(workflow.auth_file)
    fd = os.open(workflow.auth_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps(entries).encode())
    os.close(fd)
    workflow.publish(q_in, [b"5"])
    assert workflow.run_pilot() == 0
    assert workflow.drain(q_out) == [b"25\n"]


def test_a_result_no_queue_takes_is_fatal_and_the_input_stays(workflow: Workflow) -> None:
    q_in, q_out = workflow.q
    ch = workflow.channel()
    ch.queue_delete(q_out)  # the workflow's user may configure its queues
    ch.connection.close()
    workflow.publish(q_in, [b"5"])
    assert workflow.run_pilot() == 1
    assert "no queue" in (workflow.last("Error") or "") and workflow.statuses()[-1] == "FatalError"
    assert workflow.drain(q_in) == [b"5"]  # returned, not lost
