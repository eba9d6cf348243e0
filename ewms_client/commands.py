"""The `ewms` subcommands: each takes the client and its parsed arguments, prints its result,
and raises ClientError for anything the user must read (one line, exit 1)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import paths, queues, views
from .client import ClientError, EWMSClient, deactivated_when


def _messages(files: list[str], lines: bool) -> Iterator[bytes]:
    for path in files:
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


def _read_request(file: str) -> tuple[Any, Path]:
    """The request and the directory its relative paths resolve against."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as e:
        raise ClientError(f"cannot read {file}: {e.strerror}") from None
    try:
        request = json.loads(text)
    except ValueError as e:
        raise ClientError(f"{file} is not valid JSON: {e}") from None
    return request, Path.cwd() if file == "-" else Path(file).resolve().parent


def submit(c: EWMSClient, a: argparse.Namespace) -> None:
    request, base = _read_request(a.file)
    if not a.keep_paths:
        request, warnings = paths.resolve(request, base)
        for w in warnings:
            print(f"ewms: warning: {w}", file=sys.stderr)
    created = c.submit(request)
    if a.json:
        print(json.dumps(created, indent=2))
    else:
        print(created["workflow"]["workflow_id"])


def push(c: EWMSClient, a: argparse.Namespace) -> None:
    profile = c.pick_queue(a.workflow_id, a.queue, "push", a.wait, a.message_format)
    n = queues.push(profile, _messages(a.files, a.lines))
    print(f"pushed {n} message(s) to {profile.alias}", file=sys.stderr)


def _sink(out: str) -> Callable[[bytes], None]:
    if out == "-":

        def to_stdout(body: bytes) -> None:
            sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
            sys.stdout.buffer.flush()

        return to_stdout
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    counter = [len(list(directory.glob("result-*")))]

    def to_file(body: bytes) -> None:
        counter[0] += 1
        with open(directory / f"result-{counter[0]:06d}", "xb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())  # on disk before the ack

    return to_file


def pull(c: EWMSClient, a: argparse.Namespace) -> None:
    if a.dead_letter:
        profiles = c.dead_letter_queues(a.workflow_id, a.queue, a.wait, a.message_format)
        what = "dead-lettered message(s)"
    else:
        profiles = [c.pick_queue(a.workflow_id, a.queue, "pull", a.wait, a.message_format)]
        what = "message(s)"
    sink = _sink(a.out)
    counts: list[int] = []
    for profile in profiles:
        left = None if a.n is None else a.n - sum(counts)
        if left == 0:
            break
        counts.append(queues.pull(profile, sink, n=left, timeout=a.timeout, dead_letter=a.dead_letter))
    if a.n is not None and sum(counts) < a.n:
        raise ClientError(
            f"only {sum(counts)} of the {a.n} {what} asked for arrived ({a.timeout:g} s passed "
            f"without one); failed tasks, or no pilot running? see `ewms status {a.workflow_id}`"
        )
    for profile, got in zip(profiles, counts, strict=False):
        print(f"pulled {got} {what} from {profile.alias}", file=sys.stderr)


def list_workflows(c: EWMSClient, a: argparse.Namespace) -> None:
    found = c.workflows({"deactivated": None} if a.active else {})
    found.sort(key=lambda wf: wf.get("timestamp") or 0, reverse=True)
    shown = found[: a.limit] if a.limit else found
    if a.json:
        print(json.dumps(shown, indent=2))
        return
    print(views.workflow_table(shown))
    if len(shown) < len(found):
        print(f"({len(found) - len(shown)} older not shown: --limit 0 shows all)", file=sys.stderr)


def status(c: EWMSClient, a: argparse.Namespace) -> None:
    print(views.status_screen(views.Snapshot.load(c, a.workflow_id)))


def _end(c: EWMSClient, workflow_id: str, verb: str, kind: str) -> None:
    r = c.abort(workflow_id) if kind == "ABORTED" else c.finish(workflow_id)
    wf = c.workflow(workflow_id)
    if wf.get("deactivated") not in (None, kind):  # ending twice keeps the first end
        print(f"{workflow_id} was already {wf['deactivated']} ({deactivated_when(wf)}); nothing changed")
        return
    print(f"{verb} {workflow_id}: {r['n_taskforces']} taskforce(s) stopping")


def abort(c: EWMSClient, a: argparse.Namespace) -> None:
    _end(c, a.workflow_id, "aborted", "ABORTED")


def finish(c: EWMSClient, a: argparse.Namespace) -> None:
    _end(c, a.workflow_id, "finished", "FINISHED")
