"""`ewms job …`: run a script with its files and fetch the zip (issue 13)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from .client import ClientError, EWMSClient
from .jobs import JobsClient, job_parts

FINISHED = ("Completed", "Failed", "Cancelled")


def _jobs(c: EWMSClient) -> JobsClient:
    return JobsClient(c.url, c.token)


class Meter:
    """A one-line progress indicator on stderr (only when it is a terminal, or asked for)."""

    def __init__(self, what: str, out: TextIO = sys.stderr, force: bool = False) -> None:
        self.what = what
        self.out = out
        self.on = force or out.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.on or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        pct = 100 * done / total if total else 100
        self.out.write(f"\r{self.what}: {pct:5.1f}% {done / 1e6:.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            self.out.write("\n")
        self.out.flush()


def _show(job: dict[str, Any]) -> str:
    code = "" if job["exit_code"] is None else f", exit code {job['exit_code']}"
    return f"{job['id']}  {job['status']}{code}  {job['message']}"


def run(c: EWMSClient, a: argparse.Namespace) -> None:
    fields = {
        "cluster_location": a.cluster_location or "",
        "n_cores": str(a.n_cores or ""),
        "memory": a.memory or "",
        "max_runtime": str(a.max_runtime or ""),
        "secrets": a.secrets or "",
    }
    jc = _jobs(c)
    try:
        created = jc.submit(job_parts(a.files, fields), Meter("upload", force=a.progress))
        print(created["id"])
        if not a.wait:
            return
        job = _wait(jc, created["id"], a.poll)
        print(_show(job), file=sys.stderr)
        if a.out:
            _save(jc, job["id"], a.out, None, a.progress)
        if job["status"] != "Completed":
            raise ClientError(f"job {job['id']} {job['status'].lower()}: {job['message']}")
    finally:
        jc.close()


def _wait(jc: JobsClient, job_id: str, poll: float) -> dict[str, Any]:
    start, shown = time.monotonic(), ""
    while True:
        job = jc.status(job_id)
        line = f"{job_id}: {job['status']} ({time.monotonic() - start:.0f} s)"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line.ljust(len(shown)))
            sys.stderr.flush()
        elif job["status"] != shown.split(": ")[-1].split(" ")[0]:
            print(line, file=sys.stderr)
        shown = line
        if job["status"] in FINISHED:
            if sys.stderr.isatty():
                sys.stderr.write("\n")
            return job
        time.sleep(poll)


def _save(jc: JobsClient, job_id: str, out: str, path: str | None, progress: bool) -> None:
    try:
        with open(out, "wb") as f:
            n = jc.download(job_id, f, path)
    except OSError as e:
        raise ClientError(f"{out}: {e.strerror}") from None
    if progress or sys.stderr.isatty():
        print(f"wrote {out} ({n / 1e6:.1f} MB)", file=sys.stderr)


def list_jobs(c: EWMSClient, a: argparse.Namespace) -> None:
    with _closing(_jobs(c)) as jc:
        jobs = jc.jobs()
    if a.json:
        print(json.dumps(jobs, indent=2))
        return
    for job in jobs:
        print(_show(job))


def status(c: EWMSClient, a: argparse.Namespace) -> None:
    with _closing(_jobs(c)) as jc:
        job = jc.status(a.job_id)
    print(json.dumps(job, indent=2) if a.json else _show(job))


def files(c: EWMSClient, a: argparse.Namespace) -> None:
    with _closing(_jobs(c)) as jc:
        for f in jc.files(a.job_id):
            print(f"{f['size']:>12}  {f['sha256']}  {f['path']}")


def get(c: EWMSClient, a: argparse.Namespace) -> None:
    with _closing(_jobs(c)) as jc:
        _save(jc, a.job_id, a.out, a.file, a.progress)


def delete(c: EWMSClient, a: argparse.Namespace) -> None:
    with _closing(_jobs(c)) as jc:
        jc.delete(a.job_id)
    print(f"deleted {a.job_id}")


class _closing:
    def __init__(self, jc: JobsClient) -> None:
        self.jc = jc

    def __enter__(self) -> JobsClient:
        return self.jc

    def __exit__(self, *exc: object) -> None:
        self.jc.close()


def add_parser(sub: Any) -> None:
    """`ewms job …` and its subcommands."""
    p = sub.add_parser(
        "job", help="run a script with input files on the cluster; fetch the zip of its results"
    )
    jsub = p.add_subparsers(dest="job_command", required=True, metavar="SUBCOMMAND")

    s = jsub.add_parser(
        "run",
        help="submit a job: the first file is the script (sent as run.sh), the others its inputs; prints its id",
    )
    s.add_argument("files", nargs="+", metavar="FILE", help="run.sh first, then its input files")
    s.add_argument("--wait", action="store_true", help="wait until the job ends (exit 1 unless it completed)")
    s.add_argument("--out", metavar="ZIP", help="with --wait: write the zip of the working directory here")
    s.add_argument("--cluster-location", metavar="LOC", help="where to run (default: the server's first)")
    s.add_argument("--n-cores", type=int, metavar="N", help="CPUs (default 1)")
    s.add_argument("--memory", metavar="SIZE", help="memory, e.g. 2G (default 1G)")
    s.add_argument("--max-runtime", type=int, metavar="S", help="seconds run.sh may run (default 3600)")
    s.add_argument(
        "--secrets", metavar="KEYS", help="comma-separated secret keys, given as EWMS_SECRET_<KEY>"
    )
    s.add_argument(
        "--poll", type=float, default=2.0, metavar="S", help="seconds between status checks (default 2)"
    )
    s.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    s.set_defaults(run=run)

    s = jsub.add_parser("list", help="your jobs, oldest first")
    s.add_argument("--json", action="store_true", help="print the job objects as JSON")
    s.set_defaults(run=list_jobs)

    s = jsub.add_parser("status", help="a job's status, message and exit code")
    s.add_argument("job_id", metavar="JB", help="job id (JB-…)")
    s.add_argument("--json", action="store_true", help="print the whole job object")
    s.set_defaults(run=status)

    s = jsub.add_parser("files", help="a job's output files: size, SHA-256, path")
    s.add_argument("job_id", metavar="JB", help="job id (JB-…)")
    s.set_defaults(run=files)

    s = jsub.add_parser("get", help="download a finished job's zip (or one output file)")
    s.add_argument("job_id", metavar="JB", help="job id (JB-…)")
    s.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    s.add_argument("--file", metavar="PATH", help="one output file instead of the zip")
    s.add_argument("--progress", action="store_true", help="say how much was written")
    s.set_defaults(run=get)

    s = jsub.add_parser("delete", help="cancel a job and delete all its files")
    s.add_argument("job_id", metavar="JB", help="job id (JB-…)")
    s.set_defaults(run=delete)
