"""`ewms-server`: run the EWMS REST server, mint a development token, or back up the store.
Wiring only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import replace

from . import logs, standalone
from .auth import ROLES, mint_for, mint_token
from .config import Config, ConfigError, settings_help
from .secrets_box import new_key_text
from .server import PortInUse, Server, freeze_heap
from .storage import DB_FILE
from .storage.base import StoreTooNew
from .storage.sqlite_backup import BackupError, backup
from .terminal import show_secrets

LOGGER = logging.getLogger("ewms_server")
DEV_TOKENS_FILE = "dev-tokens"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ewms-server",
        description="The EWMS workflow management server (REST API + background loops).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser(
        "serve",
        help="run the server (the default)",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = sub.add_parser(
        "mint-token",
        help="print a token signed with EWMS_AUTH_SECRET",
        description="Print a bearer token signed with the local secret EWMS_AUTH_SECRET.",
    )
    m.add_argument("--sub", required=True, help="the token subject (who the caller is)")
    m.add_argument("--role", required=True, choices=ROLES, help="the caller's role")
    m.add_argument("--expires", type=float, default=3600, help="lifetime in seconds (default 3600)")
    m.add_argument(
        "--schedd",
        action="append",
        default=[],
        metavar="NAME",
        help="with --role system-tms (required there, repeatable): a schedd the TMS acts for",
    )
    sub.add_parser(
        "standalone",
        help="run it all on this machine: the server, a local-backend TMS, the local RabbitMQ",
        description=standalone.DESCRIPTION,
        epilog=standalone.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b = sub.add_parser(
        "backup",
        help="copy the embedded SQLite store to PATH, while servers run",
        description="Copy the embedded SQLite store ($EWMS_DATA_DIR/ewms.sqlite3) to PATH: a\n"
        "consistent snapshot, taken while servers keep serving, written 0600 and atomically.",
        epilog=RESTORE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("path", help="the file to write, or a directory (then ewms-<UTC time>.sqlite3 in it)")
    b.add_argument("--force", action="store_true", help="replace PATH if it exists")
    sub.add_parser(
        "secrets-key",
        help="print a new random EWMS_SECRETS_KEY",
        description="Print a new EWMS_SECRETS_KEY (base64 of 32 random bytes) for users' secrets.",
    )
    return p


RESTORE_HELP = """\
To restore: stop every ewms-server using the data directory; copy the backup to
$EWMS_DATA_DIR/ewms.sqlite3 (mode 0600); delete ewms.sqlite3-wal and ewms.sqlite3-shm there
if present (they belong to the replaced file); start the servers. With EWMS_MONGODB_URL set,
use mongodump and mongorestore instead."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "secrets-key":  # needs no settings
        print(new_key_text())
        return 0
    try:
        cfg = Config.from_env(os.environ)
    except ConfigError as e:
        print(f"ewms-server: configuration error: {e}", file=sys.stderr)
        return 2
    if args.command == "mint-token":
        if not cfg.auth_secret:
            print("ewms-server: mint-token needs EWMS_AUTH_SECRET (>= 32 bytes)", file=sys.stderr)
            return 2
        if args.expires <= 0:
            print("ewms-server: --expires must be positive", file=sys.stderr)
            return 2
        if (args.role == "system-tms") != bool(args.schedd):
            print(
                "ewms-server: a system-tms token names the schedds it acts for (--schedd NAME, "
                "repeatable), and only a system-tms token takes --schedd",
                file=sys.stderr,
            )
            return 2
        known = {loc.schedd for loc in cfg.cluster_locations.values()}
        for name in sorted(set(args.schedd) - known):
            print(f"ewms-server: warning: schedd {name!r} is not in EWMS_CLUSTER_LOCATIONS", file=sys.stderr)
        print(
            mint_token(
                cfg.auth_secret,
                sub=args.sub,
                role=args.role,
                expires_s=args.expires,
                claim=cfg.auth_role_claim,
                schedds=args.schedd or None,
                schedds_claim=cfg.auth_schedds_claim,
            )
        )
        return 0
    if args.command == "backup":
        return _backup(cfg, args.path, args.force)
    if args.command == "standalone":
        return standalone.main(os.environ)
    logs.configure(cfg.log_level)
    dev_tokens = False
    if not cfg.auth_configured:
        if not cfg.dev_mode:
            print(
                "ewms-server: no authentication configured. Set EWMS_AUTH_SECRET or "
                "EWMS_AUTH_OPENID_URL, or EWMS_DEV_MODE=true for a development instance.",
                file=sys.stderr,
            )
            return 2
        cfg = replace(cfg, auth_secret=secrets.token_urlsafe(48))
        dev_tokens = True
    return _run_server(cfg, lambda server: _show_dev_tokens(server) if dev_tokens else None)


def _run_server(cfg: Config, started: Callable[[Server], None]) -> int:
    """Serve until SIGINT/SIGTERM; `started` runs once the port is bound. A port in use or a
    store too new: one line on stderr, no traceback."""
    try:
        return asyncio.run(_serve(cfg, started))
    except PortInUse as e:
        print(f"ewms-server: {e}", file=sys.stderr)
        return 1
    except StoreTooNew as e:
        print(f"ewms-server: refusing to start: {e}", file=sys.stderr)
        return 2


def _show_dev_tokens(server: Server) -> None:
    cfg = server.cfg
    lines = [
        f"DEVELOPMENT INSTANCE on http://{cfg.rest_host}:{server.port}: random signing secret; tokens valid for 24 h:"
    ]
    for role, sub in (("user", "dev-user"), ("admin", "dev-admin"), ("system-tms", "dev-tms")):
        lines.append(f"  {role:<10} {mint_for(cfg, sub=sub, role=role, expires_s=86400)}")
    show_secrets(
        "\n".join(lines) + "\n", os.path.join(cfg.data_dir, DEV_TOKENS_FILE), what="development tokens"
    )


def _backup(cfg: Config, dest: str, force: bool) -> int:
    if cfg.mongodb_url:
        print(
            "ewms-server: backup copies the embedded SQLite store, but EWMS_MONGODB_URL is set: back up "
            f'MongoDB with mongodump (e.g. mongodump --uri="$EWMS_MONGODB_URL" --db={cfg.mongodb_db})',
            file=sys.stderr,
        )
        return 2
    try:
        done = backup(os.path.join(cfg.data_dir, DB_FILE), dest, force=force)
    except BackupError as e:
        print(f"ewms-server: backup failed: {e}", file=sys.stderr)
        return 2
    print(
        f"backed up {cfg.data_dir}/{DB_FILE} (layout version {done.layout_version}, {done.bytes} bytes) "
        f"to {done.path} in {done.seconds:.1f} s"
    )
    return 0


async def _serve(cfg: Config, started: Callable[[Server], None]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(cfg)
    await server.start()
    started(server)
    freeze_heap()
    try:
        await stop.wait()
    finally:
        await server.stop()
    LOGGER.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
