"""``ewms-tms`` / ``python -m tms``: parse --help, load config, run until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import app
from .config import ConfigError, TmsConfig, from_env, help_text


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="ewms-tms",
        description="EWMS Taskforce Management Service: turns taskforces into HTCondor clusters "
        "for one schedd and reports what they do. Configured only by the environment.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


async def _main(cfg: TmsConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.run(cfg, stop)


def main(argv: list[str] | None = None) -> None:
    _parser().parse_args(argv)
    try:
        cfg = from_env()
    except ConfigError as e:
        sys.exit(f"ewms-tms: {e}")
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(cfg))


if __name__ == "__main__":
    main()
