"""`ewms-server standalone`: the whole system on one machine in one command -- the server on
its durable default store, a local-backend TMS as a child process, and the local RabbitMQ.

It checks everything it needs before it starts anything (the TMS's settings, the broker),
binds the port, then starts the TMS with a token of its own and shows the user's tokens and an
`export EWMS_URL=… EWMS_TOKEN=…` line. SIGINT or SIGTERM stop the TMS, then the server (which
removes the broker objects of ended workflows on its way out)."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace

from . import logs
from .auth import mint_for
from .broker.base import BrokerAdapter
from .config import Config, ConfigError
from .server import PortInUse, Server, make_broker
from .storage.base import StoreTooNew
from .terminal import show_secrets

LOGGER = logging.getLogger("ewms_server.standalone")

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PILOT_VENV = "/opt/ewms-pilot-venv"
ENV_FILE = "standalone.env"
TOKEN_LIFETIME_S = 7 * 86400
TMS_STOP_TIMEOUT_S = 20.0
START_RABBITMQ = (
    "sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached; "
    "sudo rabbitmq-plugins enable rabbitmq_management"
)

DESCRIPTION = """\
Run it all on this machine: the server on the embedded SQLite store (EWMS_DATA_DIR), a TMS
with the local backend (each job an ewms-pilot process here) as a child process, and the local
RabbitMQ (EWMS_BROKER_URL, default amqp://guest:guest@127.0.0.1:5672/%2F, with its management
API). It prints the URL, ready tokens and a line `export EWMS_URL=... EWMS_TOKEN=...` for the
`ewms` CLI, also kept in $EWMS_DATA_DIR/standalone.env (0600). Ctrl-C stops it all."""

EPILOG = f"""\
Every ewms-server setting applies (see ewms-server --help), and every EWMS_TMS_* setting
reaches the TMS (see ewms-tms --help). Set by standalone unless given: EWMS_BROKER_URL (the
default above), EWMS_TMS_BACKEND=local, EWMS_TMS_SERVER_URL and EWMS_TMS_TOKEN (this server),
EWMS_TMS_SCHEDD (the schedd of cluster location "local", else of the first one), and as root
EWMS_TMS_LOCAL_JOB_COMMAND="{PILOT_VENV}/bin/python -m ewms_pilot" when that venv exists.
With no EWMS_AUTH_SECRET, a random one: tokens are valid for {TOKEN_LIFETIME_S // 86400} days or
until the server stops.

Job isolation: as root the local backend runs each taskforce's jobs under a uid of its own
(EWMS_TMS_LOCAL_UID_RANGE); the pilot must then be runnable by any user:
  bash resources/pilot-venv.sh && {PILOT_VENV}/bin/pip install --no-deps .
As another user, EWMS_TMS_LOCAL_SINGLE_TENANT=true runs every job as you (any task can then
read any other's queue credentials: only when all tasks are trusted alike).

Without RabbitMQ on this machine, start one with:
  {START_RABBITMQ}

Workflows still running at the stop keep their jobs running (as HTCondor's would); the next
standalone's TMS watches them again."""


def _fail(message: str, code: int = 2) -> int:
    print(f"ewms-server standalone: {message}", file=sys.stderr)
    return code


def server_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    if not env.get("EWMS_BROKER_URL"):
        env["EWMS_BROKER_URL"] = DEFAULT_BROKER_URL
    return env


def tms_env(environ: Mapping[str, str], cfg: Config, url: str, token: str) -> dict[str, str]:
    """The TMS child's environment: no server setting (the admin broker URL stays here),
    every EWMS_TMS_* the user gave, and what standalone decides."""
    env = {k: v for k, v in environ.items() if not k.startswith("EWMS_") or k.startswith("EWMS_TMS_")}
    locations = cfg.cluster_locations
    schedd = (locations.get("local") or next(iter(locations.values()))).schedd
    env.update(EWMS_TMS_BACKEND="local", EWMS_TMS_SERVER_URL=url, EWMS_TMS_TOKEN=token)
    env.setdefault("EWMS_TMS_SCHEDD", schedd)
    if os.geteuid() == 0 and os.access(f"{PILOT_VENV}/bin/python", os.X_OK):
        env.setdefault("EWMS_TMS_LOCAL_JOB_COMMAND", f"{PILOT_VENV}/bin/python -m ewms_pilot")
    return env


def tms_problems(env: Mapping[str, str]) -> list[str]:
    """What keeps the TMS from starting with `env`, said before anything starts."""
    from tms.app import setup_problems
    from tms.config import ConfigError as TmsConfigError
    from tms.config import from_env

    try:
        tms_cfg = from_env(env)
    except TmsConfigError as e:
        return [str(e)]
    if tms_cfg.backend != "local":
        return ["EWMS_TMS_BACKEND: standalone runs the local backend only"]
    return setup_problems(tms_cfg)


async def broker_problem(broker: BrokerAdapter) -> str | None:
    try:
        return await broker.health()
    except Exception as e:  # the check itself failing is also "no usable broker"
        return f"{type(e).__name__}: {e}"


def _die_with_parent() -> None:
    """In the TMS child: SIGTERM when standalone dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_tms(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tms"],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno(),
        stderr=sys.stderr.fileno(),
        preexec_fn=_die_with_parent,
    )


async def stop_tms(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, TMS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            LOGGER.warning("the TMS did not stop within %.0f s; killing it", TMS_STOP_TIMEOUT_S)
            proc.kill()
            await asyncio.to_thread(proc.wait)
    LOGGER.info("TMS stopped (exit %s)", proc.returncode)


def _tokens(cfg: Config, url: str) -> tuple[str, str]:
    """The user's and admin's tokens text, and the TMS's token."""

    def token(role: str, sub: str) -> str:
        return mint_for(cfg, sub=sub, role=role, expires_s=TOKEN_LIFETIME_S)

    user, admin = token("user", "standalone-user"), token("admin", "standalone-admin")
    text = (
        f"# EWMS standalone at {url} -- tokens valid for {TOKEN_LIFETIME_S // 86400} days or until it stops\n"
        f"# admin token: {admin}\n"
        f"export EWMS_URL={url} EWMS_TOKEN={user}\n"
    )
    return text, token("system-tms", "standalone-tms")


async def _run(environ: Mapping[str, str], cfg: Config) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = make_broker(cfg)
    if problem := await broker_problem(broker):
        await broker.close()
        return _fail(
            f"no usable RabbitMQ at EWMS_BROKER_URL: {problem}.\n"
            f"Start one on this machine with:\n  {START_RABBITMQ}\n"
            "or set EWMS_BROKER_URL to the admin URL of yours (EWMS_BROKER_MANAGEMENT_URL if its "
            "management API is elsewhere than port 15672 of that host).",
            1,
        )
    server = Server(cfg, broker=broker)
    try:
        await server.start()
    except BaseException:
        await broker.close()
        raise
    url = f"http://{cfg.rest_host}:{server.port}"
    text, tms_token = _tokens(cfg, url)
    try:
        tms = start_tms(tms_env(environ, cfg, url, tms_token))
    except OSError as e:
        await server.stop()
        return _fail(f"cannot start the TMS: {e}", 1)
    LOGGER.info("TMS started (pid %d, local backend)", tms.pid)
    show_secrets(text, os.path.join(cfg.data_dir, ENV_FILE), what="tokens and the export line")
    print(f"EWMS standalone: serving {url}; Ctrl-C stops it", file=sys.stderr, flush=True)
    tms_ended = asyncio.create_task(asyncio.to_thread(tms.wait))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([tms_ended, stopping], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if not stop.is_set():
        LOGGER.error("the TMS exited (code %s); stopping the server", tms.returncode)
        code = 1
    stopping.cancel()
    await stop_tms(tms)
    await tms_ended
    await server.stop()
    LOGGER.info("stopped")
    return code


def main(environ: Mapping[str, str]) -> int:
    env = server_env(environ)
    try:
        cfg = Config.from_env(env)
    except ConfigError as e:
        return _fail(f"configuration error: {e}")
    if not cfg.auth_secret:
        if cfg.auth_openid_url:
            return _fail(
                "standalone mints its own tokens: unset EWMS_AUTH_OPENID_URL (or set EWMS_AUTH_SECRET)"
            )
        cfg = replace(cfg, auth_secret=secrets.token_urlsafe(48))
    if problems := tms_problems(tms_env(environ, cfg, "http://127.0.0.1:1", "checked-before-start")):
        return _fail(
            "the local-backend TMS cannot start: "
            + "; ".join(problems)
            + ". See `ewms-server standalone --help` (job isolation)."
        )
    logs.configure(cfg.log_level)
    try:
        return asyncio.run(_run(environ, cfg))
    except PortInUse as e:
        return _fail(str(e), 1)
    except StoreTooNew as e:
        return _fail(f"refusing to start: {e}")
