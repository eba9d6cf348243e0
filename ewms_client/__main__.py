"""`ewms`: submit workflows, push tasks, pull results, follow them, end them."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys

from ewms_pilot.envelope import ENVELOPE, RAW

from . import commands, job_commands, paths, progress, secrets
from .client import SETTINGS_DOCS, ClientError, EWMSClient

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

ENDING = """\
ending a workflow: abort or finish
  Both end it at once and the same way: it takes no more messages (ewms push is refused),
  and its pilots are removed. A task that is running gets EWMS_PILOT_STOP_GRACE seconds
  (default 10) to finish and publish its result; after that it is killed and its message
  returned to its queue. Messages still queued are not run. What is in the queues stays
  readable with ewms pull until the workflow's pilots are gone (at most
  EWMS_BROKER_REVOKE_MAX_WAIT_S, default 600 s, after the end); then the queue credentials
  are revoked, and the queues are deleted EWMS_BROKER_QUEUE_DELETE_GRACE_S (default 1 day)
  after the end. The only difference is the state recorded, which ewms list and ewms status
  show:
    finish  FINISHED: the work is done (pull every result first)
    abort   ABORTED: the work is given up"""


def version() -> str:
    try:
        return importlib.metadata.version("ewms")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_format_options(s: argparse.ArgumentParser) -> None:
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


def _add_wait(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--wait",
        type=float,
        default=60,
        metavar="S",
        help="seconds to wait for a new workflow's queues to be made (default 60)",
    )


def _workflow_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("workflow_id", metavar="WF", help="workflow id (WF-…), as ewms submit printed it")


def parser() -> argparse.ArgumentParser:
    env_help = "environment:\n" + "\n".join(f"  {n:<15} {m} ({d})" for n, d, m in SETTINGS_DOCS)
    p = argparse.ArgumentParser(
        prog="ewms",
        description=__doc__,
        epilog=f"{env_help}\n\n{ENDING}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ewms {version()}")
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=os.environ.get("EWMS_LOG_LEVEL", "WARNING").upper(),
        help="log level (default WARNING, or $EWMS_LOG_LEVEL); DEBUG also shows the broker library's logs",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "submit",
        help="submit a workflow from a JSON file; prints its id",
        description="Submit a workflow (the body of POST /v1/workflows; see resources/examples/).",
        epilog=paths.RULES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("file", metavar="FILE", help="the workflow request (JSON); - for stdin")
    s.add_argument("--json", action="store_true", help="print the whole response, not just the id")
    s.add_argument(
        "--keep-paths",
        action="store_true",
        help="send task paths as written, resolving nothing (paths on the cluster's machines)",
    )
    s.set_defaults(run=commands.submit)

    s = sub.add_parser("push", help="push task messages (one per file, or one per line)")
    _workflow_arg(s)
    s.add_argument("files", nargs="+", metavar="FILE", help="message file(s); - for stdin")
    s.add_argument("--lines", action="store_true", help="one message per non-empty line")
    s.add_argument(
        "--queue",
        metavar="ALIAS",
        help="public queue to push to (default: the first public queue a task reads)",
    )
    _add_wait(s)
    _add_format_options(s)
    s.set_defaults(run=commands.push)

    s = sub.add_parser(
        "pull",
        help="pull results (each message's data), each acked once written",
        description="Pull messages from a workflow's queue, acking each once it is written. Exits 1 "
        "when --n was given and fewer messages arrived.",
    )
    _workflow_arg(s)
    s.add_argument(
        "--out",
        required=True,
        metavar="DIR|-",
        help="directory for result-NNNNNN files, or - for stdout (one per line)",
    )
    s.add_argument(
        "--n", type=int, metavar="N", help="stop after N messages; fewer is an error (default: no limit)"
    )
    s.add_argument(
        "--timeout",
        type=float,
        default=10,
        metavar="S",
        help="stop after this many seconds without a message (default 10)",
    )
    s.add_argument(
        "--queue",
        metavar="NAME",
        help="public queue alias (default: the final output queue); with --dead-letter also a "
        "private queue's id (default: every queue a task reads)",
    )
    s.add_argument(
        "--dead-letter",
        action="store_true",
        help="read the messages tasks kept failing on (returned more than the server's "
        "EWMS_BROKER_TASK_DELIVERY_LIMIT times, default 3) from the queues' <queue id>.dead-letter queues",
    )
    _add_wait(s)
    _add_format_options(s)
    s.set_defaults(run=commands.pull)

    s = sub.add_parser("list", help="list your workflows, newest first, with their state")
    s.add_argument("--active", action="store_true", help="only workflows not ended yet")
    s.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show the newest N (default 20; 0: all)"
    )
    s.add_argument("--json", action="store_true", help="print the workflow objects as JSON")
    s.set_defaults(run=commands.list_workflows)

    s = sub.add_parser(
        "status", help="one screen about a workflow: its state, tasks, taskforces, workers and errors"
    )
    _workflow_arg(s)
    s.set_defaults(run=commands.status)

    s = sub.add_parser(
        "watch",
        help="a progress bar of tasks done, dead-lettered and pending, with rate and ETA, and why "
        "each taskforce's jobs wait, until the end",
    )
    _workflow_arg(s)
    s.add_argument(
        "--interval", type=float, default=10, metavar="S", help="seconds between updates (default 10)"
    )
    s.add_argument("--once", action="store_true", help="print one summary and exit")
    s.set_defaults(run=progress.watch)

    s = sub.add_parser(
        "retry",
        help="move the messages tasks kept failing on (the dead letters) back to their queues, "
        "for another EWMS_BROKER_TASK_DELIVERY_LIMIT tries",
    )
    _workflow_arg(s)
    s.set_defaults(run=progress.retry)

    for name, run, text in (
        ("finish", commands.finish, "end a workflow whose work is done (state FINISHED)"),
        ("abort", commands.abort, "end a workflow, giving its work up (state ABORTED)"),
    ):
        s = sub.add_parser(
            name,
            help=f"{text}; see ewms --help",
            description=ENDING,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _workflow_arg(s)
        s.set_defaults(run=run)
    job_commands.add_parser(sub)
    secrets.add_parser(sub)
    return p


def configure_logging(level: str) -> None:
    """The level asked for; pika's INFO lines (one per connection step) only at DEBUG."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level != "DEBUG":
        logging.getLogger("pika").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.log_level not in LOG_LEVELS:  # a default from the environment is not checked by argparse
        p.error(f"EWMS_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {args.log_level!r}")
    configure_logging(args.log_level)
    if missing := [name for name in ("EWMS_URL", "EWMS_TOKEN") if not os.environ.get(name)]:
        print(
            f"ewms: configuration error: {' and '.join(missing)} not set (see ewms --help)", file=sys.stderr
        )
        sys.exit(2)
    try:
        args.run(EWMSClient.from_env(os.environ), args)
    except ClientError as e:
        print(f"ewms: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
