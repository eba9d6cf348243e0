"""`ewms secret set|list|delete`: the user's secrets, which tasks naming them get as
EWMS_SECRET_<KEY>. A value is read without echo (or from stdin), sent once, and never shown."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys

from .client import ClientError, EWMSClient, timestamp

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
HELP = """\
A task gets the secrets its task directive names ("secrets": ["KEY", ...] in the workflow
request) as the environment variables EWMS_SECRET_<KEY>, and nothing else sees them: not the
pilot's environment, the job's files or logs, nor any answer of the server. Values are stored
encrypted; they can be replaced or deleted, never read back."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "secret",
        help="set, list or delete your secrets (tasks get them as EWMS_SECRET_<KEY>)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="secret_command", required=True, metavar="ACTION")
    s = actions.add_parser(
        "set",
        help="set (create or replace) a secret",
        description="Set a secret. The value comes from --value, else from stdin when it is not a "
        "terminal (one trailing newline dropped), else from a prompt that does not echo.",
    )
    s.add_argument("key", metavar="KEY", help="name: letters, digits and _, not starting with a digit")
    s.add_argument(
        "--value",
        metavar="V",
        help="the value (shows in your shell history and, while ewms runs, to other users' ps: "
        "prefer stdin or the prompt)",
    )
    s.set_defaults(run=set_secret)
    s = actions.add_parser("list", help="list your secrets' names (never their values)")
    s.add_argument("--json", action="store_true", help="print them as JSON")
    s.set_defaults(run=list_secrets)
    s = actions.add_parser("delete", help="delete a secret (tasks already running keep theirs)")
    s.add_argument("key", metavar="KEY")
    s.set_defaults(run=delete_secret)


def _key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise ClientError(
            f"bad secret name {key!r}: letters, digits and _, at most 64, not starting with a digit"
        )
    return key


def _read_value(key: str, given: str | None) -> str:
    if given is not None:
        return given
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {key} (not shown): ")
    value = sys.stdin.read()
    return value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value


def set_secret(c: EWMSClient, a: argparse.Namespace) -> None:
    key = _key(a.key)
    shown = c.set_secret(key, _read_value(key, a.value))
    print(f"{shown['key']} set ({timestamp(shown['updated_ts'])}); tasks get it as EWMS_SECRET_{key}")


def list_secrets(c: EWMSClient, a: argparse.Namespace) -> None:
    found = c.secrets()
    if a.json:
        print(json.dumps(found, indent=2))
        return
    if not found:
        print("no secrets (ewms secret set KEY)")
        return
    width = max(len(s["key"]) for s in found)
    for s in found:
        print(f"{s['key']:<{width}}  set {timestamp(s['updated_ts'])}")


def delete_secret(c: EWMSClient, a: argparse.Namespace) -> None:
    shown = c.delete_secret(_key(a.key))
    print(f"{shown['key']} deleted")
