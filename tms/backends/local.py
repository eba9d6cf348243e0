"""LocalBackend: each cluster runs as processes on this machine, supervised outside the TMS.

A detached supervisor process (``local_supervisor``) per cluster plays the schedd: it runs the
jobs, enforces their limits and writes the job event log in HTCondor's format. Clusters are
recorded under the state directory, so they outlive a TMS crash like real HTCondor jobs do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import glob
import json
import os
import shlex
import subprocess
import sys
import time

from .base import BackendError, ClusterSpec


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalBackend:
    name = "local"

    def __init__(self, state_dir: str, job_command: str, *, submit_timeout: float = 30.0) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.clusters_dir = os.path.join(self.state_dir, "clusters")
        os.makedirs(self.clusters_dir, mode=0o700, exist_ok=True)
        self._command = shlex.split(job_command)
        self._submit_timeout = submit_timeout

    def _next_cluster_id(self) -> int:
        with open(os.path.join(self.state_dir, "next-cluster-id"), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            current = int(f.read().strip() or "1")
            f.seek(0)
            f.truncate()
            f.write(str(current + 1))
            return current

    def record_path(self, cluster_id: int) -> str:
        return os.path.join(self.clusters_dir, f"{cluster_id}.json")

    def _records(self) -> list[dict]:
        out = []
        for path in glob.glob(os.path.join(self.clusters_dir, "*.json")):
            try:
                with open(path) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                continue
        return out

    async def submit(self, spec: ClusterSpec) -> int:
        cluster_id = await asyncio.to_thread(self._next_cluster_id)
        pending = os.path.join(self.clusters_dir, f"{cluster_id}.spec")
        record = {
            "cluster_id": cluster_id,
            "command": self._command,
            "spec": dataclasses.asdict(spec),
            "submitted": time.time(),
        }
        fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.makedirs(spec.job_dir, mode=0o700, exist_ok=True)
        # opening a log file and forking a supervisor that daemonizes at once take microseconds
        with open(os.path.join(spec.job_dir, f"supervisor-{cluster_id}.log"), "ab") as out:  # noqa: ASYNC230
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "tms.backends.local_supervisor", pending],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=spec.job_dir,
                env={**os.environ, "PYTHONPATH": _pythonpath()},
            )
        if await asyncio.to_thread(proc.wait) != 0:  # it daemonizes at once: this is quick
            raise BackendError(f"local submit of cluster {cluster_id}: supervisor failed to start")
        # the supervisor commits the cluster (renames .spec -> .json) once its submit events are written
        deadline = time.monotonic() + self._submit_timeout
        while not os.path.exists(self.record_path(cluster_id)):  # noqa: ASYNC240 - a stat per 10 ms
            if time.monotonic() > deadline:
                raise BackendError(f"local submit of cluster {cluster_id} timed out (see supervisor log)")
            await asyncio.sleep(0.01)
        return cluster_id

    async def find_cluster(self, taskforce_uuid: str) -> int | None:
        for record in await asyncio.to_thread(self._records):
            if record["spec"]["taskforce_uuid"] == taskforce_uuid:
                return int(record["cluster_id"])
        return None

    def _command_file(self, cluster_id: int, verb: str, proc: int | None, reason: str) -> None:
        path = self.record_path(cluster_id)
        if not os.path.exists(path):
            raise BackendError(f"no local cluster {cluster_id}")
        if os.path.exists(os.path.join(self.clusters_dir, f"{cluster_id}.done")):
            return  # nothing left in the queue, as condor_rm of a finished cluster
        cmd_dir = os.path.join(self.clusters_dir, f"{cluster_id}.cmd")
        os.makedirs(cmd_dir, exist_ok=True)
        name = f"{time.time_ns()}-{verb}-{'all' if proc is None else proc}"
        with open(os.path.join(cmd_dir, name + ".tmp"), "w") as f:
            f.write(reason)
        os.replace(os.path.join(cmd_dir, name + ".tmp"), os.path.join(cmd_dir, name))

    async def remove(self, cluster_id: int, reason: str, proc: int | None = None) -> None:
        await asyncio.to_thread(self._command_file, cluster_id, "remove", proc, reason)

    async def release(self, cluster_id: int, proc: int) -> None:
        await asyncio.to_thread(self._command_file, cluster_id, "release", proc, "via condor_release")

    def live_supervisors(self) -> list[int]:
        """Pids of supervisors still running (for tests and shutdown checks)."""
        out = []
        for record in self._records():
            pid_file = os.path.join(self.clusters_dir, f"{record['cluster_id']}.pid")
            try:
                with open(pid_file) as f:
                    pid = int(f.read())
            except (OSError, ValueError):
                continue
            if _pid_alive(pid):
                out.append(pid)
        return out

    async def close(self) -> None:
        return None


def _pythonpath() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
