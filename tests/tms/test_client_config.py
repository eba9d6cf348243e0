"""REST client backoff through a server outage; settings and --help."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
import tornado.httpserver
import tornado.web

from tms.client import ServerRejected, Stopped, TmsClient
from tms.config import SETTINGS, ConfigError, from_env


class Flaky(tornado.web.RequestHandler):
    n = 0

    def get(self) -> None:
        Flaky.n += 1
        if Flaky.n <= 3:
            self.set_status(503)
            self.write({"error": "down"})
        else:
            self.write({"taskforce": {"taskforce_uuid": "TF-1"}})


class Rejects(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_status(400)
        self.write({"error": "bad"})


# requests' connection pool drops the sockets of the stopped server only at garbage collection
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_backoff_through_outage_then_catch_up() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    stop = asyncio.Event()
    client = TmsClient.connect(f"http://127.0.0.1:{port}", "tok", stop, timeout=2, backoff_max=0.2)
    server = None

    async def later() -> None:  # the server comes back after a while, first answering 503
        nonlocal server
        await asyncio.sleep(0.6)
        app = tornado.web.Application(
            [(r"/v1/tms/pending-starter/taskforces", Flaky), (r"/v1/tms/pending-stopper/taskforces", Rejects)]
        )
        server = tornado.httpserver.HTTPServer(app)
        server.listen(port, "127.0.0.1")

    task = asyncio.create_task(later())
    try:
        got = await asyncio.wait_for(client.get_pending_starter("s"), 20)
        assert got == {"taskforce": {"taskforce_uuid": "TF-1"}}
        assert Flaky.n == 4 and client.outage_since is None
        with pytest.raises(ServerRejected):
            await client.get_pending_stopper("s")
        server.stop()  # type: ignore[union-attr]
        await server.close_all_connections()  # type: ignore[union-attr]
        waiting = asyncio.create_task(client.get_pending_starter("s"))
        await asyncio.sleep(0.3)
        stop.set()
        with pytest.raises(Stopped):
            await waiting
    finally:
        await task
        client.close()


def test_settings_and_help() -> None:
    with pytest.raises(ConfigError):
        from_env({})
    cfg = from_env(
        {"EWMS_TMS_SERVER_URL": "http://x", "EWMS_TMS_TOKEN": "SECRET-T", "EWMS_TMS_BACKEND": "local"}
    )
    assert cfg.schedd == socket.gethostname() and cfg.backend == "local"
    assert "SECRET-T" not in repr(cfg) and "SECRET-T" not in str(cfg)
    with pytest.raises(ConfigError):
        from_env({"EWMS_TMS_SERVER_URL": "http://x", "EWMS_TMS_TOKEN": "t", "EWMS_TMS_BACKEND": "slurm"})
    out = subprocess.run(
        [sys.executable, "-m", "tms", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for s in SETTINGS:
        assert s.env in out


def test_housekeeping_sweep(tmp_path: Any) -> None:
    import os

    from tms.housekeeping import sweep

    root = tmp_path / "jobs"
    for name in ("TF-old", "TF-mid", "TF-live", "TF-new"):
        (root / name).mkdir(parents=True)
        (root / name / "job-events.log").write_text("000 ...\n")
        (root / name / "pilot-queue-auth.json").write_text("{}")
    now = 1_000_000.0
    for name, age in (("TF-old", 30), ("TF-mid", 5), ("TF-live", 30), ("TF-new", 0)):
        for f in (root / name).iterdir():
            os.utime(f, (now - age * 86400, now - age * 86400))
    live_log = str(root / "TF-live" / "job-events.log")
    done = sweep(str(root), {"TF-live"}, {live_log}, 3 * 86400, 14 * 86400, now=now)
    assert done == {"compressed": ["TF-mid"], "deleted": ["TF-old"]}
    assert not (root / "TF-old").exists()
    assert (root / "TF-mid" / "job-events.log.gz").exists() and not (
        root / "TF-mid" / "pilot-queue-auth.json"
    ).exists()
    assert (root / "TF-live" / "job-events.log").exists() and (root / "TF-new" / "job-events.log").exists()
    # the compressed log keeps its age: it is deleted later, not kept forever
    later = sweep(str(root), set(), set(), 3 * 86400, 14 * 86400, now=now + 10 * 86400)
    assert sorted(later["deleted"]) == ["TF-live", "TF-mid"]  # TF-live ended meanwhile


def test_the_job_directory_is_absolute_whatever_the_start_directory(tmp_path: Any, monkeypatch: Any) -> None:
    """Issue 10 B10: a TMS started elsewhere later must find the same directories."""
    monkeypatch.chdir(tmp_path)
    base = {"EWMS_TMS_SERVER_URL": "http://x", "EWMS_TMS_TOKEN": "t"}
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert from_env(base).job_event_log_dir == "/var/lib/ewms-tms/jobs"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as a user, with a relative XDG_STATE_HOME
    cfg = from_env({**base, "XDG_STATE_HOME": "state", "HOME": "/home/u"})
    assert cfg.job_event_log_dir == str(tmp_path / "state" / "ewms-tms" / "jobs")
    assert from_env({**base, "HOME": "/home/u"}).job_event_log_dir == "/home/u/.local/state/ewms-tms/jobs"
    cfg = from_env({**base, "EWMS_TMS_JOB_EVENT_LOG_DIR": "jobs"})
    assert cfg.job_event_log_dir == str(tmp_path / "jobs")
    assert cfg.local_state_dir == str(tmp_path / "jobs" / ".local-schedd")
