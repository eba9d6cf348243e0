"""`ewms-pilot`: run one pilot from its job environment (see `--help` for every setting)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
import textwrap

from .chirp import Chirper, PilotStatus, make_sink
from .config import SECRET_VARS, SETTINGS_DOCS, ConfigError, PilotConfig, queue_auth
from .pilot import FatalError, Pilot, make_chirper
from .secrets import load_fetch

LOGGER = logging.getLogger("ewms_pilot")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def version() -> str:
    try:
        return importlib.metadata.version("ewms")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _shown(default: str) -> str:
    if default.startswith("(required"):
        return default[1:-1]
    if default == "(none)":
        return "default: unset"
    if default == "''":
        return "default: empty"
    return f"default: {default}"


def settings_help() -> str:
    lines = ["environment:"]
    for name, default, meaning in SETTINGS_DOCS:
        lines.append(f"  {name}")
        lines.extend(
            textwrap.wrap(
                f"{meaning} ({_shown(default)})", 88, initial_indent="      ", subsequent_indent="      "
            )
        )
    lines.append("")
    lines.append("the task reads $EWMS_TASK_INFILE and writes its output to $EWMS_TASK_OUTFILE.")
    lines.append("a warm task (EWMS_PILOT_TASK_MODE=warm) serves messages over $EWMS_WARM_SOCKET")
    lines.append("instead: see docs/warm-runner.md, or ewms_pilot.worker.serve for Python tasks.")
    lines.append("exit status: 0 done (idle timeout, SIGTERM), 1 fatal error, 2 bad settings.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ewms-pilot",
        description="Consume task messages from the EWMS queues, run each task, publish its "
        "output, and report status by HTCondor chirp. Configured by the environment only.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ewms-pilot {version()}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=os.environ.get("EWMS_PILOT_LOG_LEVEL", "INFO").upper(),
        help="logging level (default INFO, or $EWMS_PILOT_LOG_LEVEL); DEBUG also shows pika's logs",
    )
    args = parser.parse_args(argv)
    if args.log_level not in LOG_LEVELS:  # argparse does not check a default
        parser.error(f"EWMS_PILOT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {args.log_level!r}")
    return args


async def _fatal_chirp(error: str) -> None:
    """Best effort: report a config error if the chirp settings themselves are usable."""
    mode = os.environ.get("EWMS_PILOT_CHIRP", "htcondor")
    path = os.environ.get("EWMS_PILOT_CHIRP_FILE")
    if mode not in ("htcondor", "file") or (mode == "file" and not path):
        return
    chirper = Chirper(make_sink(mode, path), 0)
    chirper.status(PilotStatus.FATAL_ERROR)
    chirper.set("Error", error)
    await chirper.flush()


def _use_pidfd_child_watcher() -> None:
    """Python 3.11's default child watcher starts a thread per task process; pidfd does not
    (3.12+ uses pidfd by itself and deprecates watchers)."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            return  # kernel without pidfd
        watcher = asyncio.PidfdChildWatcher()
        asyncio.get_event_loop_policy().set_child_watcher(watcher)
        watcher.attach_loop(asyncio.get_running_loop())


async def amain() -> int:
    _use_pidfd_child_watcher()
    try:
        cfg = PilotConfig.from_env(os.environ)
        auth = queue_auth(cfg, os.environ)
        secrets_fetch = load_fetch(cfg.auth_file)
    except ConfigError as e:
        LOGGER.error("bad settings: %s", e)
        await _fatal_chirp(f"bad settings: {e}")
        return 2
    for name in SECRET_VARS:  # tasks inherit the environment: EWMS's tokens must not reach them
        os.environ.pop(name, None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    LOGGER.info(
        "pilot for taskforce %s (workflow %s), runner %s (%s), %d concurrent task(s)",
        cfg.taskforce_uuid or "?",
        cfg.workflow_id or "?",
        cfg.runner,
        cfg.task_mode,
        cfg.max_concurrent_tasks,
    )
    chirper = make_chirper(cfg)
    try:
        pilot = Pilot(cfg, auth, chirper, stop, secrets_fetch)
    except (FatalError, ValueError) as e:
        LOGGER.error("fatal: %s", e)
        await _fatal_chirp(str(e))
        return 1
    return await pilot.run()


def configure_logging(level: str) -> None:
    """The level asked for; pika's INFO (several lines per connection and channel) only at DEBUG."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level != "DEBUG":
        logging.getLogger("pika").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    sys.exit(asyncio.run(amain()))


if __name__ == "__main__":
    main()
