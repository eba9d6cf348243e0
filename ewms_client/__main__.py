"""`ewms`: submit workflows, push tasks, pull results, watch progress, abort or finish."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ewms_pilot.envelope import ENVELOPE, RAW

from . import progress, queues
from .client import SETTINGS_DOCS, ClientError, EWMSClient


def _messages(paths: list[str], lines: bool) -> Iterator[bytes]:
    for path in paths:
        try:
            data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        except OSError as e:
            raise ClientError(f"cannot read {path}: {e.strerror}") from None
        if not lines:
            yield data
            continue
        for line in data.splitlines():
            if line.strip():
                yield line


def cmd_submit(c: EWMSClient, a: argparse.Namespace) -> None:
    try:
        request = json.loads(Path(a.file).read_text())
    except OSError as e:
        raise ClientError(f"cannot read {a.file}: {e.strerror}") from None
    except ValueError as e:
        raise ClientError(f"{a.file} is not valid JSON: {e}") from None
    created = c.submit(request)
    if a.json:
        print(json.dumps(created, indent=2))
    else:
        print(created["workflow"]["workflow_id"])


def cmd_push(c: EWMSClient, a: argparse.Namespace) -> None:
    profile = c.pick_queue(a.workflow_id, a.queue, "push", a.wait, a.message_format)
    n = queues.push(profile, _messages(a.files, a.lines))
    print(f"pushed {n} message(s) to {profile.alias}", file=sys.stderr)


def cmd_pull(c: EWMSClient, a: argparse.Namespace) -> None:
    profile = c.pick_queue(a.workflow_id, a.queue, "pull", a.wait, a.message_format)
    sink: Callable[[bytes], None]
    if a.out == "-":

        def sink(body: bytes) -> None:
            sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
            sys.stdout.buffer.flush()
    else:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        start = len(list(out.glob("result-*")))

        def sink(body: bytes, counter: list[int] = [start]) -> None:  # noqa: B006
            counter[0] += 1
            path = out / f"result-{counter[0]:06d}"
            with open(path, "xb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())  # on disk before the ack

    n = queues.pull(profile, sink, n=a.n, timeout=a.timeout)
    print(f"pulled {n} message(s) from {profile.alias}", file=sys.stderr)


def cmd_abort(c: EWMSClient, a: argparse.Namespace) -> None:
    r = c.abort(a.workflow_id)
    print(f"aborted {r['workflow_id']}: {r['n_taskforces']} taskforce(s) stopping")


def cmd_finish(c: EWMSClient, a: argparse.Namespace) -> None:
    r = c.finish(a.workflow_id)
    print(f"finished {r['workflow_id']}: {r['n_taskforces']} taskforce(s) stopping")


def add_format_options(s: argparse.ArgumentParser) -> None:
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--envelope",
        dest="message_format",
        action="store_const",
        const=ENVELOPE,
        help="messages are oms-mqclient envelopes (zstd JSON {headers, data}); each payload is "
        "the text data (default, unless the workflow's tasks set EWMS_PILOT_MESSAGE_FORMAT=raw)",
    )
    g.add_argument(
        "--raw",
        dest="message_format",
        action="store_const",
        const=RAW,
        help="messages are the bytes as they are (workflows whose tasks set "
        "EWMS_PILOT_MESSAGE_FORMAT=raw, for binary payloads)",
    )


def parser() -> argparse.ArgumentParser:
    env_help = "environment:\n" + "\n".join(f"  {n:<12} {m} (default {d})" for n, d, m in SETTINGS_DOCS)
    p = argparse.ArgumentParser(
        prog="ewms",
        description=__doc__,
        epilog=env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("submit", help="submit a workflow from a JSON file")
    s.add_argument("file", help="POST /v1/workflows request body (see resources/examples/)")
    s.add_argument("--json", action="store_true", help="print the whole response")
    s.set_defaults(run=cmd_submit)

    s = sub.add_parser("push", help="push task messages (one per file, or per line)")
    s.add_argument("workflow_id")
    s.add_argument("files", nargs="+", metavar="FILE", help="message file(s); - for stdin")
    s.add_argument("--lines", action="store_true", help="one message per non-empty line")
    s.add_argument(
        "--queue", metavar="ALIAS", help="public queue alias (default: the first public queue a task reads)"
    )
    s.add_argument("--wait", type=float, default=60, help="seconds to wait for activation")
    add_format_options(s)
    s.set_defaults(run=cmd_push)

    s = sub.add_parser("pull", help="pull results: each message's data, acked once written")
    s.add_argument("workflow_id")
    s.add_argument(
        "--out",
        required=True,
        metavar="DIR|-",
        help="directory for result-NNNNNN files, or - for stdout (one per line)",
    )
    s.add_argument("--n", type=int, help="stop after N messages")
    s.add_argument(
        "--timeout",
        type=float,
        default=10,
        help="stop after this many seconds without a message (default 10)",
    )
    s.add_argument("--queue", metavar="ALIAS", help="public queue alias (default: the final output queue)")
    s.add_argument("--wait", type=float, default=60, help="seconds to wait for activation")
    add_format_options(s)
    s.set_defaults(run=cmd_pull)

    s = sub.add_parser(
        "watch",
        help="a progress bar of tasks done, dead-lettered and pending, with rate and ETA, until the end",
    )
    s.add_argument("workflow_id")
    s.add_argument("--interval", type=float, default=10, help="seconds between updates")
    s.add_argument("--once", action="store_true", help="print one summary and exit")
    s.set_defaults(run=progress.watch)

    s = sub.add_parser(
        "status", help="once: tasks done and pending, rate, ETA, and why each taskforce's jobs wait"
    )
    s.add_argument("workflow_id")
    s.set_defaults(run=progress.status)

    s = sub.add_parser(
        "retry", help="move the messages tasks kept failing on (dead letters) back to their queues"
    )
    s.add_argument("workflow_id")
    s.set_defaults(run=progress.retry)

    for name, run, text in (
        ("abort", cmd_abort, "abort a workflow (stops its pilots)"),
        ("finish", cmd_finish, "mark a workflow finished"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("workflow_id")
        s.set_defaults(run=run)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.run(EWMSClient.from_env(os.environ), args)
    except ClientError as e:
        print(f"ewms: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
