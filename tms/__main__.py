"""``ewms-tms`` / ``python -m tms``: parse --help, load config, check the token, run until
SIGINT/SIGTERM. Exit 0 after a clean stop, 1 when the server refuses the token, 2 on a
configuration error -- each failure in one line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import signal
import sys

from . import app
from .client import AuthRejected, Stopped, TmsClient
from .config import ConfigError, TmsConfig, from_env, help_text


def _version() -> str:
    try:
        return importlib.metadata.version("ewms")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ewms-tms",
        description="EWMS Taskforce Management Service: turns taskforces into HTCondor clusters "
        "for one schedd and reports what they do. Configured only by the environment.",
        epilog=help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ewms-tms {_version()}")
    return p


def configure_logging(level: str) -> None:
    """The level asked for; pika's and RestClient's INFO (RestClient logs every refusal with a
    traceback; we say it once) only at DEBUG."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level.upper() != "DEBUG":
        for noisy in ("pika", "RestClient"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> None:
    print(f"ewms-tms: {' '.join(message.split())}", file=sys.stderr)


async def _main(cfg: TmsConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = TmsClient.connect(
        cfg.server_url, cfg.token, stop, timeout=cfg.request_timeout, backoff_max=cfg.backoff_max
    )
    try:
        await client.check_token()  # waits for a server that is down; a refusal is final
    except AuthRejected as e:
        client.close()
        what = "is not a system-tms token for this schedd" if e.status == 403 else "is bad or expired"
        _fail(f"the server refused EWMS_TMS_TOKEN: it {what} (HTTP {e.status})")
        return 1
    except Stopped:
        client.close()
        return 0
    fatal = await app.run(cfg, stop, client=client)
    if fatal:
        _fail(fatal)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    _parser().parse_args(argv)
    try:
        cfg = from_env()
        if problems := app.setup_problems(cfg):
            raise ConfigError("; ".join(problems))
    except ConfigError as e:
        _fail(f"configuration error: {e}")
        return 2
    configure_logging(cfg.log_level)
    return asyncio.run(_main(cfg))


if __name__ == "__main__":
    sys.exit(main())
