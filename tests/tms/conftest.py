"""Shared fixtures of the TMS tests."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tms.backends.machines import Machine
from tms.config import TmsConfig

from .isolation import ISOLATED, JOB_PYTHON, job_root, readable, uid_range

FAKE_PILOT = readable("tests/tms/fake_pilot.py")  # run by job uids


def make_cfg(tmp_path: Any, **kw: Any) -> TmsConfig:
    jobs = os.path.join(job_root(tmp_path.name), "jobs")
    base: dict[str, Any] = dict(
        server_url="http://127.0.0.1:1",
        token="tok-SECRET",
        schedd="test-schedd",
        job_event_log_dir=jobs,
        backend="local",
        starter_interval=0.05,
        stopper_interval=0.05,
        watcher_interval=0.1,
        tracker_interval=0.5,
        pilot_image_cvmfs="/cvmfs/pilot",
        pilot_image_docker="docker://pilot",
        local_job_command=f"{JOB_PYTHON} {FAKE_PILOT}",
        local_state_dir=os.path.join(jobs, ".local-schedd"),
        local_uid_range=uid_range(),
        local_single_tenant=not ISOLATED,
        local_machines=(Machine("test-host", 64),),  # every job at once (default: a slot per CPU)
    )
    base.update(kw)
    return TmsConfig(**base)


SECRET_TOKEN = "mq-token-VERY-SECRET-123"


def pending(uuid: str = "TF-0001", n_workers: int = 2, **wc: Any) -> dict[str, Any]:
    """A pending-starter response as the server sends it."""
    worker_config = {
        "do_transfer_worker_stdouterr": True,
        "max_worker_runtime": 600,
        "n_cores": 1,
        "priority": 50,
        "worker_disk": "1G",
        "worker_memory": "512M",
    }
    worker_config.update(wc)
    return {
        "taskforce": {
            "taskforce_uuid": uuid,
            "workflow_id": "WF-0001",
            "task_id": "TK-0001",
            "schedd": "test-schedd",
            "n_workers": n_workers,
            "priority": 50,
            "pilot_config": {
                "tag": "1.2.3",
                "image_source": "cvmfs",
                "environment": {"EWMS_PILOT_PREFETCH": "2"},
                "input_files": [],
            },
            "worker_config": worker_config,
        },
        "task_directive": {
            "task_id": "TK-0001",
            "workflow_id": "WF-0001",
            "task_image": "/bin/echo",
            "task_args": "hello 'big world'",
            "task_env": {"A": "1"},
            "init_image": "",
            "init_args": "",
            "init_env": {},
            "input_queues": ["MQ-in"],
            "output_queues": ["MQ-out"],
        },
        "mqprofiles": [
            {
                "mqid": "MQ-in",
                "workflow_id": "WF-0001",
                "alias": "in",
                "is_public": True,
                "is_activated": True,
                "auth_token": SECRET_TOKEN,
                "broker_type": "rabbitmq",
                "broker_address": "amqp://127.0.0.1",
            },
            {
                "mqid": "MQ-out",
                "workflow_id": "WF-0001",
                "alias": "out",
                "is_public": True,
                "is_activated": True,
                "auth_token": SECRET_TOKEN + "-out",
                "broker_type": "rabbitmq",
                "broker_address": "amqp://127.0.0.1",
            },
        ],
    }


@pytest.fixture
def cfg(tmp_path: Any) -> TmsConfig:
    return make_cfg(tmp_path)
