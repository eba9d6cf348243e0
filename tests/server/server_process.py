"""`ewms-server` as real subprocesses on a data directory of the test's (crash, replica and
backup tests), and a small blocking JSON client that tells "no answer" from an answer."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ewms_server.auth import mint_token

SECRET = "crash-test-secret-" + "x" * 32
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token(role: str = "user", sub: str = "alice", schedds: list[str] | None = None) -> str:
    """A token of these servers; a system-tms one acts for `schedds`."""
    return mint_token(SECRET, sub=sub, role=role, expires_s=3600, schedds=schedds)


class NoAnswer(Exception):
    """The request got no HTTP answer (refused, reset, timed out): its outcome is unknown."""


class Api:
    """One keep-alive connection; `call` returns (status, body) or raises NoAnswer."""

    def __init__(self, port: int, tok: str, timeout: float = 15) -> None:
        self.port, self.tok, self.timeout = port, tok, timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.tok}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._conn.request(method, path, body=data, headers=headers)
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise NoAnswer(f"{method} {path}: {type(e).__name__}: {e}") from None
        return resp.status, (json.loads(raw) if raw else None)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The body of a 200; anything else is an assertion error."""
        status, got = self.call(method, path, body)
        assert status == 200, f"{method} {path} -> {status}: {got}"
        return got

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ServerProcess:
    """`python -m ewms_server` on `data_dir` and `port`: start, SIGKILL, restart, stop."""

    def __init__(self, data_dir: Path, port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.port, self.log = data_dir, port, log
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "EWMS_AUTH_SECRET": SECRET,
            "EWMS_REST_PORT": str(port),
            "EWMS_DATA_DIR": str(data_dir),
            # these tests create workflows by the hundred, as one user
            "EWMS_USER_MAX_ACTIVE_WORKFLOWS": "0",
            "EWMS_USER_MAX_WORKFLOWS_PER_MIN": "0",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ewms_server"], env=self.env, stdout=out, stderr=out, cwd=REPO
            )

    def start(self, timeout: float = 60) -> None:
        """Spawn and wait until /v1/health answers."""
        self.spawn()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/v1/health")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM, as an operator would; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)
