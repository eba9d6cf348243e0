"""What running EWMS's published pilot here takes: its own venv, a `docker` stand-in, a chirp
server in place of HTCondor's starter, and the job environment EWMS's TMS would give it."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PILOT_REQUIREMENTS = ("ewms-pilot[rabbitmq]==1.0.5", "htcondor<25")  # 1.0.5 needs Python 3.12
STANDIN = Path(__file__).with_name("docker_standin.py")


class SetupError(Exception):
    """The venv cannot be made here (no Python 3.12, no package index); the text says why."""


def find_python312() -> str:
    """$EWMS_TEST_PYTHON312, else a pyenv 3.12, else python3.12 on PATH."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [os.environ.get("EWMS_TEST_PYTHON312", "")]
    candidates += sorted(glob.glob(f"{root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12", shutil.which("python3.12") or ""]
    for exe in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [exe, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            if out.stdout.strip() == "True":
                return exe
    raise SetupError("EWMS's pilot 1.0.5 needs Python 3.12: none found (set EWMS_TEST_PYTHON312)")


def cache_dir() -> Path:
    base = os.environ.get("EWMS_TEST_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ewms-tests"
    )
    return Path(base)


def pilot_venv() -> Path:
    """The venv's python, made once per requirement set and kept (a second run reuses it);
    concurrent test runs wait on a lock instead of building twice."""
    key = "venv-" + "-".join(
        r.replace("[", "_").replace("]", "").replace("=", "").replace("<", "lt") for r in PILOT_REQUIREMENTS
    )
    home = cache_dir()
    home.mkdir(parents=True, exist_ok=True)
    final = home / key
    python = final / "bin" / "python"
    with open(home / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / ".complete").exists():
            return python
        shutil.rmtree(final, ignore_errors=True)  # a build cut short
        steps = [
            [find_python312(), "-m", "venv", str(final)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PILOT_REQUIREMENTS],
        ]
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise SetupError(f"{' '.join(argv[:4])}... failed: {done.stderr.strip()[-800:]}")
        (final / ".complete").write_text(" ".join(PILOT_REQUIREMENTS))
    return python


def docker_bin(where: Path) -> Path:
    """A directory holding `docker` (the stand-in), to put first on the pilot's PATH."""
    where.mkdir(parents=True, exist_ok=True)
    docker = where / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    docker.chmod(0o755)
    return where


def ewms_job_environment(found: dict[str, Any]) -> dict[str, str]:
    """The pilot's environment as EWMS builds it from GET /v1/tms/pending-starter/taskforces:
    its WMS puts the task and the per-direction queue lists in pilot_config.environment, its
    TMS joins lists with ';' and turns on chirping into the job event log."""
    tf, directive = found["taskforce"], found["task_directive"]
    profiles = {p["mqid"]: p for p in found["mqprofiles"]}
    env = {k: str(v) for k, v in tf["pilot_config"]["environment"].items()}
    env |= {
        "EWMS_PILOT_TASK_IMAGE": directive["task_image"],
        "EWMS_PILOT_TASK_ARGS": directive["task_args"],
        "EWMS_PILOT_TASK_ENV_JSON": json.dumps(directive["task_env"]),
    }
    for direction, key in (("INCOMING", "input_queues"), ("OUTGOING", "output_queues")):
        queues = [profiles[m] for m in directive[key]]
        env[f"EWMS_PILOT_QUEUE_{direction}"] = ";".join(p["mqid"] for p in queues)
        for field in ("auth_token", "broker_type", "broker_address"):
            env[f"EWMS_PILOT_QUEUE_{direction}_{field.upper()}"] = ";".join(p[field] for p in queues)
    return env | {"EWMS_PILOT_HTCHIRP": "True", "EWMS_PILOT_HTCHIRP_DEST": "JOB_EVENT_LOG"}


class ChirpServer:
    """HTCondor's starter side of chirp, for `ulog` only: records each line a job logs."""

    def __init__(self, config_dir: Path) -> None:
        self.cookie = os.urandom(8).hex()
        self.lines: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.config = config_dir / ".chirp.config"
        self.config.write_text(f"127.0.0.1 {self._sock.getsockname()[1]} {self.cookie}\n")
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            for command in _commands(f):
                verb, _, arg = command.partition(" ")
                if verb == "cookie":
                    ok = arg == self.cookie
                elif verb == "ulog":
                    self.lines.append(arg)
                    ok = True
                else:
                    ok = verb == "set_job_attr_delayed"
                conn.sendall(b"0\n" if ok else b"-1\n")


def _commands(f: Any) -> Iterator[str]:
    """Chirp commands end at an unescaped newline; `\\<c>` stands for <c> (htchirp.quote)."""
    buf: list[str] = []
    while (c := f.read(1)) != b"":
        if c == b"\\":
            buf.append(f.read(1).decode("latin-1"))
        elif c == b"\n":
            yield "".join(buf).encode("latin-1").decode("utf-8", "replace")
            buf = []
        else:
            buf.append(c.decode("latin-1"))
