"""LocalBackend: each job is a process on this machine, supervised by a detached
``local_supervisor`` that writes the cluster's job event log in HTCondor's format. Clusters
are recorded under the state directory, so they outlive a TMS crash like real HTCondor jobs do.

Isolation (``local_users``): with a uid range, each cluster's jobs run under a uid of their
own, in ``<job dir>/work.<cluster>`` (0700, theirs); the job dir itself (0711, the TMS's)
keeps the event log and output (0600, the TMS's) and the queue-auth file (0600, the job
uid's, deleted when the cluster ends). Supervisors and jobs get an allow-listed environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from . import local_users
from . import machines as mc
from .base import BackendError, ClusterSpec, IdleReport

if TYPE_CHECKING:
    from ..config import TmsConfig

_RLIM_MAX = resource.RLIM_INFINITY - 1 if resource.RLIM_INFINITY > 0 else 2**63 - 2


def _supervisor_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"local_supervisor" in f.read()
    except OSError:
        return mc.pid_alive(pid) if not os.path.isdir("/proc") else False


def setup_problems(cfg: TmsConfig) -> list[str]:
    return local_users.setup_problems(
        job_dir=cfg.job_event_log_dir,
        job_command=cfg.local_job_command,
        pass_env=local_users.allowed_environment(os.environ, cfg.local_pass_env),
        single_tenant=cfg.local_single_tenant,
    )


def preflight(spec: ClusterSpec, command: list[str]) -> None:
    """What the supervisor could not start, refused at submit (a failed submit with its reason)."""
    for key, value in spec.environment.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise BackendError(f"environment variable {key[:40]!r}: empty name, '=' or NUL")
        try:
            os.fsencode(key), os.fsencode(value)
        except UnicodeError:
            raise BackendError(f"environment variable {key[:40]!r} cannot be encoded") from None
    if any("\0" in arg for arg in command):
        raise BackendError("the job command holds a NUL character")
    for what, size in (("worker_memory", spec.memory_bytes), ("worker_disk", spec.disk_bytes)):
        if not 0 < size <= _RLIM_MAX:
            raise BackendError(f"{what} of {size} bytes cannot be set as a limit on this machine")


class LocalBackend:
    name = "local"

    def __init__(
        self,
        state_dir: str,
        job_command: str,
        *,
        uid_range: tuple[int, int] | None = None,
        pass_env: tuple[str, ...] = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH"),
        submit_timeout: float = 30.0,
        machines: tuple[mc.Machine, ...] = (),
    ) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.clusters_dir = os.path.join(self.state_dir, "clusters")
        os.makedirs(self.clusters_dir, mode=0o700, exist_ok=True)
        self._command = shlex.split(job_command)
        self._uid_range = uid_range
        self._base_env = local_users.allowed_environment(os.environ, pass_env)
        self._submit_timeout = submit_timeout
        self.machines = machines or mc.default_machines()
        self.slots = mc.SlotTable(self.state_dir, self.machines)

    @classmethod
    def from_config(cls, cfg: TmsConfig) -> LocalBackend:
        isolated = not cfg.local_single_tenant
        if isolated:  # job users must pass through the root of the job dirs (never list it)
            os.makedirs(cfg.job_event_log_dir, mode=0o711, exist_ok=True)
            mode = os.stat(cfg.job_event_log_dir).st_mode
            if not mode & 0o001:
                os.chmod(cfg.job_event_log_dir, (mode & 0o7777) | 0o011)
        return cls(
            cfg.local_state_dir,
            cfg.local_job_command,
            uid_range=cfg.local_uid_range if isolated else None,
            pass_env=cfg.local_pass_env,
            machines=cfg.local_machines,
        )

    @property
    def isolated(self) -> bool:
        return self._uid_range is not None

    # --- records ---------------------------------------------------------------------------------

    def record_path(self, cluster_id: int) -> str:
        return os.path.join(self.clusters_dir, f"{cluster_id}.json")

    def _base(self, cluster_id: int, ext: str) -> str:
        return os.path.join(self.clusters_dir, f"{cluster_id}{ext}")

    def _records(self, pattern: str = "*.json") -> list[dict[str, Any]]:
        out = []
        for path in glob.glob(os.path.join(self.clusters_dir, pattern)):
            try:
                with open(path) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                continue
        return out

    def _live_records(self) -> list[dict[str, Any]]:
        return [
            r
            for r in self._records("*.json") + self._records("*.spec")
            if not os.path.exists(self._base(r["cluster_id"], ".done"))
            and not os.path.exists(self._base(r["cluster_id"], ".failed"))
        ]

    def _new_record(self, spec: ClusterSpec) -> dict[str, Any]:
        """Cluster id, uid and the pending record, under one lock (other TMSes may submit too)."""
        with local_users.locked(os.path.join(self.state_dir, "submit.lock")):
            counter = os.path.join(self.state_dir, "next-cluster-id")
            try:
                with open(counter) as f:
                    cluster_id = int(f.read().strip() or "1")
            except (OSError, ValueError):
                cluster_id = 1
            with open(counter, "w") as f:
                f.write(str(cluster_id + 1))
            uid = None
            if self._uid_range is not None:
                in_use = {r["uid"] for r in self._live_records() if r.get("uid") is not None}
                try:
                    uid = local_users.allocate_uid(self.state_dir, *self._uid_range, in_use)
                except LookupError as e:
                    raise BackendError(f"local submit: {e}") from None
            record = {
                "cluster_id": cluster_id,
                "command": self._command,
                "spec": dataclasses.asdict(spec),
                "submitted": time.time(),
                "uid": uid,
                "gid": uid,
                "work_dir": os.path.join(spec.job_dir, f"work.{cluster_id}"),
                "base_env": self._base_env,
                "machines": mc.machines_json(self.machines),
                "state_dir": self.state_dir,
            }
            fd = os.open(self._base(cluster_id, ".spec"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
        return record

    def _prepare(self, record: dict[str, Any]) -> None:
        """The job dir (0711 when isolated), the work dir (0700, the job uid's), the auth file
        (0600, the job uid's)."""
        spec, uid, gid = record["spec"], record["uid"], record["gid"]
        os.makedirs(spec["job_dir"], mode=0o700, exist_ok=True)
        os.makedirs(record["work_dir"], mode=0o700, exist_ok=True)
        if uid is None:
            return
        os.chmod(spec["job_dir"], 0o711)
        os.chown(record["work_dir"], uid, gid, follow_symlinks=False)
        os.chmod(record["work_dir"], 0o700)
        auth = spec["environment"].get("EWMS_PILOT_QUEUE_AUTH_FILE")
        if auth and os.path.dirname(auth) == spec["job_dir"] and os.path.exists(auth):
            os.chown(auth, uid, gid, follow_symlinks=False)
            os.chmod(auth, 0o600)

    async def submit(self, spec: ClusterSpec) -> int:
        preflight(spec, self._command)
        try:
            record = await asyncio.to_thread(self._new_record, spec)
            await asyncio.to_thread(self._prepare, record)
        except OSError as e:
            raise BackendError(f"local submit: {e}") from None
        cluster_id = record["cluster_id"]
        pending = self._base(cluster_id, ".spec")
        env = {**self._base_env, "PYTHONPATH": _pythonpath()}  # never the TMS's own settings
        log = os.path.join(spec.job_dir, f"supervisor-{cluster_id}.log")
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # forking a supervisor that daemonizes at once takes milliseconds
            proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "tms.backends.local_supervisor", pending],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                start_new_session=True,
                cwd=spec.job_dir,
                env=env,
            )
        finally:
            os.close(fd)
        if await asyncio.to_thread(proc.wait) != 0:
            raise BackendError(f"local submit of cluster {cluster_id}: supervisor failed to start")
        # the supervisor commits the cluster (renames .spec -> .json) once its submit events are
        # written, or says why it could not in .failed
        deadline = time.monotonic() + self._submit_timeout
        while not os.path.exists(self.record_path(cluster_id)):  # noqa: ASYNC240 - a stat per 10 ms
            failed = self._base(cluster_id, ".failed")
            if os.path.exists(failed):  # noqa: ASYNC240
                with open(failed) as f:  # noqa: ASYNC230 - a few bytes
                    raise BackendError(f"local submit of cluster {cluster_id}: {f.read().strip()[:500]}")
            if time.monotonic() > deadline:
                raise BackendError(f"local submit of cluster {cluster_id} timed out (see {log})")
            await asyncio.sleep(0.01)
        return int(cluster_id)

    async def find_cluster(self, taskforce_uuid: str) -> int | None:
        for record in await asyncio.to_thread(self._records):
            if record["spec"]["taskforce_uuid"] == taskforce_uuid:
                return int(record["cluster_id"])
        return None

    def _command_file(self, cluster_id: int, verb: str, proc: int | None, reason: str) -> None:
        path = self.record_path(cluster_id)
        if not os.path.exists(path):
            raise BackendError(f"no local cluster {cluster_id}")
        if os.path.exists(self._base(cluster_id, ".done")):
            return  # nothing left in the queue, as condor_rm of a finished cluster
        cmd_dir = self._base(cluster_id, ".cmd")
        os.makedirs(cmd_dir, mode=0o700, exist_ok=True)
        name = f"{time.time_ns()}-{verb}-{'all' if proc is None else proc}"
        with open(os.path.join(cmd_dir, name + ".tmp"), "w") as f:
            f.write(reason)
        os.replace(os.path.join(cmd_dir, name + ".tmp"), os.path.join(cmd_dir, name))

    async def remove(self, cluster_id: int, reason: str, proc: int | None = None) -> None:
        await asyncio.to_thread(self._command_file, cluster_id, "remove", proc, reason)

    async def release(self, cluster_id: int, proc: int) -> None:
        await asyncio.to_thread(self._command_file, cluster_id, "release", proc, "via condor_release")

    async def resubmit(self, cluster_id: int, proc: int, memory_bytes: int) -> None:
        await asyncio.to_thread(self._command_file, cluster_id, "resubmit", proc, str(int(memory_bytes)))

    async def set_quarantine(self, machines: set[str]) -> None:
        """Supervisors skip these machines and send their pilots away from them."""
        await asyncio.to_thread(
            mc.write_quarantine, self.state_dir, machines & {*self.names(), mc.ANY_MACHINE}
        )

    def names(self) -> list[str]:
        return [m.name for m in self.machines]

    def _pid(self, cluster_id: int) -> int | None:
        try:
            with open(self._base(cluster_id, ".pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def live_supervisors(self) -> list[int]:
        """Pids of supervisors still running (for tests and shutdown checks)."""
        pids = (self._pid(int(r["cluster_id"])) for r in self._records())
        return [pid for pid in pids if pid is not None and _supervisor_alive(pid)]

    def reap_dead(self) -> list[int]:
        """End, in its event log, every committed cluster whose supervisor died without
        ending it (killed, machine rebooted): a phantom job never stays 'running'."""
        from .local_supervisor import finish_cluster  # the supervisor's own way to end one

        reaped = []
        for record in self._records():
            cluster_id = int(record["cluster_id"])
            if os.path.exists(self._base(cluster_id, ".done")):
                continue
            pid = self._pid(cluster_id)
            if pid is None or _supervisor_alive(pid):
                continue
            finish_cluster(record, self._base(cluster_id, ""), "EWMS: the local supervisor died")
            reaped.append(cluster_id)
        return reaped

    async def poll(self) -> None:
        try:
            await asyncio.to_thread(self.reap_dead)
        except OSError as e:
            raise BackendError(f"local backend: reaping dead supervisors: {e}") from None

    async def explain_idle(self, idle: dict[int, list[int]], n_running: int) -> dict[int, IdleReport]:
        """An idle local job waits for a free slot on a machine not quarantined, is being
        started, or belongs to a supervisor that died."""

        def alive(cluster_id: int) -> bool:
            pid = self._pid(cluster_id)
            return pid is not None and _supervisor_alive(pid)

        def look() -> tuple[dict[int, bool], set[str], dict[str, int]]:
            return {c: alive(c) for c in idle}, mc.read_quarantine(self.state_dir), self.slots.busy()

        states, quarantined, busy = await asyncio.to_thread(look)
        usable = [m for m in self.machines if m.name not in quarantined and mc.ANY_MACHINE not in quarantined]
        total = sum(m.slots for m in usable)
        in_use = sum(busy.get(m.name, 0) for m in usable)
        waiting = mc.QUARANTINED if not usable else mc.NO_FREE_SLOT if in_use >= total else "starting"
        return {
            c: IdleReport(
                {waiting if states[c] else "supervisor not running": len(procs)}, slots=(total, in_use)
            )
            for c, procs in idle.items()
        }

    async def close(self) -> None:
        return None


def _pythonpath() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
