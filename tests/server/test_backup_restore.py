"""`ewms-server backup` as an operator runs it: while a server is busy taking workflows, then
the README's restore into a fresh data directory, where a new server finds every workflow
acknowledged before the backup began."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.conftest import workflow_body

from .server_process import REPO, Api, NoAnswer, ServerProcess, free_port, token

LOCATIONS = '{"local": "backup-schedd"}'


def backup_cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    full.update({"EWMS_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "ewms_server", "backup", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


class Poster(threading.Thread):
    """POSTs workflows until stopped; keeps what was acknowledged, in order."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.api = Api(port, token("user", "alice"))
        self.stop = threading.Event()
        self.acked: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    status, got = self.api.call("POST", "/v1/workflows", workflow_body())
                except NoAnswer:
                    continue
                assert status == 200, got
                with self.lock:
                    self.acked.append(got)
        finally:
            self.api.close()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.acked)


def test_backup_while_busy_then_restore_into_a_new_data_dir(tmp_path: Path) -> None:
    live, restored, backups = tmp_path / "live", tmp_path / "restored", tmp_path / "backups"
    backups.mkdir()
    env = {"EWMS_CLUSTER_LOCATIONS": LOCATIONS, "EWMS_LOOP_INTERVAL_S": "0.2"}
    srv = ServerProcess(live, free_port(), tmp_path / "live.log", env)
    srv.start()
    posters = [Poster(srv.port) for _ in range(2)]
    try:
        for p in posters:
            p.start()
        while sum(len(p.snapshot()) for p in posters) < 40:
            posters[0].stop.wait(0.05)
        before = [wf for p in posters for wf in p.snapshot()]  # acknowledged before the backup began
        res = backup_cli(live, str(backups / "ewms.sqlite3"))
        after = sum(len(p.snapshot()) for p in posters)
    finally:
        for p in posters:
            p.stop.set()
        for p in posters:
            p.join(30)
        assert srv.stop() == 0
    assert res.returncode == 0, res.stderr
    assert "backed up" in res.stdout and str(backups / "ewms.sqlite3") in res.stdout
    assert after > len(before)  # the server kept taking workflows while the backup ran
    copy = backups / "ewms.sqlite3"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600 and os.listdir(backups) == ["ewms.sqlite3"]

    again = backup_cli(live, str(copy))
    assert (
        again.returncode == 2 and "exists; pass --force" in again.stderr and "Traceback" not in again.stderr
    )
    assert backup_cli(live, str(copy), "--force").returncode == 0

    # the restore of the README: copy the file in as ewms.sqlite3 (no -wal / -shm beside it)
    restored.mkdir(mode=0o700)
    shutil.copy2(copy, restored / "ewms.sqlite3")
    srv = ServerProcess(restored, free_port(), tmp_path / "restored.log", env)
    srv.start()
    api = Api(srv.port, token("user", "alice"))
    try:
        for made in before:
            wid = made["workflow"]["workflow_id"]
            assert api.ok("GET", f"/v1/workflows/{wid}")["workflow_id"] == wid
            for tf in made["taskforces"]:
                assert api.ok("GET", f"/v1/taskforces/{tf['taskforce_uuid']}")["workflow_id"] == wid
    finally:
        api.close()
        assert srv.stop() == 0


def test_backup_refuses_what_it_cannot_copy(tmp_path: Path) -> None:
    res = backup_cli(tmp_path, str(tmp_path / "copy.sqlite3"))
    assert res.returncode == 2 and "no store at" in res.stderr and "Traceback" not in res.stderr
    res = backup_cli(
        tmp_path, str(tmp_path / "copy.sqlite3"), env={"EWMS_MONGODB_URL": "mongodb://db.example:27017"}
    )
    assert res.returncode == 2 and "mongodump" in res.stderr and "Traceback" not in res.stderr
    assert os.listdir(tmp_path) == []
