"""One local cluster's stand-in for the schedd: runs its jobs, writes its job event log.

Started detached by ``LocalBackend.submit`` as ``python -m tms.backends.local_supervisor <spec>``.
It stays the TMS's user (it writes the event log the TMS reads); each job drops to the
cluster's uid when it has one. Whatever goes wrong, the cluster ends in its event log: a job
that cannot start is held with the reason, and a supervisor that fails aborts its jobs and
removes the cluster -- never a job left looking like it runs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

from . import eventlog_writer as ev
from . import local_users
from . import machines as mc

POLL = 0.1
KILL_GRACE = 5.0
HOLD_CODE_DURATION = 47  # HTCondor's hold code for exceeding allowed_execute_duration
_CHIRP_READ_MAX = 1 << 20  # bytes of chirp lines read per job per poll
_HEADER = re.compile(rb"^(005|009) \((\d+)\.(\d+)\.", re.MULTILINE)


def ended_procs(log_path: str, cluster_id: int) -> set[int]:
    """Procs of ``cluster_id`` with a terminated (005) or aborted (009) event in the log."""
    try:
        with open(log_path, "rb") as f:
            data = f.read()
    except OSError:
        return set()
    return {int(m.group(3)) for m in _HEADER.finditer(data) if int(m.group(2)) == cluster_id}


def _chirp_path(spec: dict[str, Any], cluster_id: int, proc: int) -> str:
    # in the job dir (the TMS's): the job can write its own file, never swap it for a link
    return os.path.join(spec["job_dir"], f"chirp.{cluster_id}.{proc}")


def finish_cluster(record: dict[str, Any], base: str, reason: str) -> None:
    """End a cluster for good: abort every job without a terminal event, write the cluster's
    removal, take back its uid (processes, work dir, auth file), mark it done."""
    spec, cluster_id = record["spec"], int(record["cluster_id"])
    n_jobs = int(spec["n_workers"])
    log = ev.EventLogWriter(spec["job_event_log_fpath"])
    try:
        for proc in sorted(set(range(n_jobs)) - ended_procs(spec["job_event_log_fpath"], cluster_id)):
            log.write(ev.aborted(cluster_id, proc, reason))
        log.write(ev.cluster_removed(cluster_id, n_jobs))
    finally:
        log.close()
    if record.get("uid") is not None:
        local_users.reclaim(int(record["uid"]), int(record["gid"]), record["work_dir"])
        try:
            os.rmdir(record["work_dir"])  # emptied by its uid; the entry is ours to remove
        except FileNotFoundError:
            pass
        except OSError:  # something the uid could not delete: make it no one else's to read
            os.chown(record["work_dir"], os.getuid(), os.getgid(), follow_symlinks=False)
            os.chmod(record["work_dir"], 0o700)
        paths = [_chirp_path(spec, cluster_id, p) for p in range(n_jobs)]
        paths.append(spec["environment"].get("EWMS_PILOT_QUEUE_AUTH_FILE", ""))
        for path in paths:  # the uid may go to another taskforce: nothing of it stays its
            with contextlib.suppress(OSError):
                if path and os.lstat(path).st_uid == int(record["uid"]):
                    os.unlink(path)
    open(base + ".done", "w").close()


class Job:
    def __init__(self, proc: int) -> None:
        self.proc = proc
        self.popen: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.chirp_path = ""
        self.chirp_pos = 0
        self.chirp_partial = b""
        self.state = "idle"  # idle | running | held | ended
        self.machine: mc.Machine | None = None  # while it holds a slot
        self.slot = 0
        self.memory_bytes = 0  # 0: the spec's; more after a memory hold was resubmitted


class Supervisor:
    def __init__(self, spec_path: str) -> None:
        with open(spec_path) as f:
            record = json.load(f)
        self.record = record
        self.spec_path = spec_path
        self.cluster_id = int(record["cluster_id"])
        self.command: list[str] = record["command"]
        self.spec = record["spec"]
        self.uid: int | None = record.get("uid")
        self.gid: int | None = record.get("gid")
        self.work_dir: str = record.get("work_dir") or self.spec["job_dir"]
        self.base_env: dict[str, str] = record.get("base_env") or {}
        self.base = spec_path[: -len(".spec")]
        self.record_path = self.base + ".json"
        self.cmd_dir = self.base + ".cmd"
        self.log = ev.EventLogWriter(self.spec["job_event_log_fpath"])
        self.jobs = [Job(p) for p in range(int(self.spec["n_workers"]))]
        self.stopping = False
        machines = [
            mc.Machine(**m) for m in record.get("machines") or mc.machines_json(mc.default_machines())
        ]
        self.state_dir = record.get("state_dir") or os.path.dirname(os.path.dirname(spec_path))
        self.slots = mc.SlotTable(self.state_dir, machines)
        self.quarantined = mc.read_quarantine(self.state_dir)

    # --- jobs ----------------------------------------------------------------------------------

    def _limits(self, proc: int) -> None:
        """In the child (already the job's uid): the requested memory, disk (per file) and
        cores, where the OS allows."""
        for rlimit, value in (
            (resource.RLIMIT_AS, self.jobs[proc].memory_bytes or self.spec["memory_bytes"]),
            (resource.RLIMIT_FSIZE, self.spec["disk_bytes"]),
        ):
            with contextlib.suppress(ValueError, OSError, OverflowError):
                resource.setrlimit(rlimit, (value, value))
        with contextlib.suppress(AttributeError, OSError, ValueError):
            # spread jobs over the machine's CPUs instead of stacking them all on the first
            allowed = sorted(os.sched_getaffinity(0))
            n = min(max(1, int(self.spec["n_cores"])), len(allowed))
            start = (self.cluster_id + proc) * n
            os.sched_setaffinity(0, [allowed[(start + i) % len(allowed)] for i in range(n)])

    def _env(self, job: Job) -> dict[str, str]:
        env = dict(self.base_env)  # an allow-list of the TMS's environment: never its token
        env.update(self.spec["environment"])
        env.update(
            {
                "EWMS_PILOT_RUNNER": "process",
                "EWMS_PILOT_CHIRP": "file",
                "EWMS_PILOT_CHIRP_FILE": job.chirp_path,
                "_CONDOR_SCRATCH_DIR": self.work_dir,
                "HOME": self.work_dir,
                "TMPDIR": self.work_dir,
                "CLUSTER_ID": str(self.cluster_id),
                "PROC_ID": str(job.proc),
            }
        )
        if job.machine is not None:
            env[mc.MACHINE_ENV] = job.machine.name
            if job.machine.broken:  # a black-hole node: every task the pilot starts fails at once
                env["EWMS_PILOT_TASK_IMAGE"], env["EWMS_PILOT_TASK_ARGS"] = job.machine.broken_task()
        return env

    def _job_key(self, job: Job) -> str:
        return f"{self.cluster_id}.{job.proc}"

    def _place(self, job: Job) -> bool:
        """A slot for an idle job, on a machine not quarantined; False: it stays idle."""
        got = self.slots.acquire(self._job_key(job), os.getpid(), self.quarantined)
        if isinstance(got, str):
            return False
        job.machine, job.slot = self.slots.machines[got[0]], got[1]
        return True

    def _free_slot(self, job: Job) -> None:
        if job.machine is not None:
            self.slots.release(self._job_key(job))
            job.machine = None

    def _evict_quarantined(self) -> None:
        """Pilots on a machine just quarantined stop (SIGTERM: they return their in-flight
        messages) and their jobs go back to idle, to be placed on another machine."""
        self.quarantined = mc.read_quarantine(self.state_dir)
        for job in self.jobs:
            if (
                job.state == "running"
                and job.machine is not None
                and (job.machine.name in self.quarantined or mc.ANY_MACHINE in self.quarantined)
            ):
                self._kill(job)
                self.log.write(ev.evicted(self.cluster_id, job.proc))
                self._free_slot(job)
                job.state = "idle"

    def _chirp(self, proc: int) -> str:
        return _chirp_path(self.spec, self.cluster_id, proc)

    def _start(self, job: Job) -> None:
        if job.machine is None and not self._place(job):
            job.state = "idle"
            return
        assert job.machine is not None
        job_dir = self.spec["job_dir"]
        job.chirp_path = self._chirp(job.proc)
        job.chirp_pos, job.chirp_partial = 0, b""
        fds: list[int] = []
        try:
            fd = os.open(job.chirp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            fds.append(fd)
            if self.uid is not None:
                os.fchown(fd, self.uid, self.gid if self.gid is not None else self.uid)
            if self.spec["transfer_stdouterr"]:
                for ext in ("out", "err"):  # the TMS's files; the job writes through the fd
                    path = os.path.join(job_dir, f"{self.cluster_id}.{job.proc}.{ext}")
                    fds.append(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            else:
                fds += [os.open(os.devnull, os.O_WRONLY)] * 2
            slot_name = f"slot{job.slot}@{job.machine.name}"
            self.log.write(ev.execute(self.cluster_id, job.proc, slot_name=slot_name))
            drop: dict[str, Any] = {}
            if self.uid is not None:
                drop = {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": 0o077}
            job.popen = subprocess.Popen(
                self.command,
                env=self._env(job),
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=fds[1],
                stderr=fds[2],
                start_new_session=True,
                preexec_fn=functools.partial(self._limits, job.proc),
                **drop,
            )
        except Exception as e:  # whatever it was, the job is held with it
            reason = f"Failed to execute '{shlex.join(self.command)}': {type(e).__name__}: {e}"
            self.log.write(ev.held(self.cluster_id, job.proc, reason, 6, 2))
            job.state = "held"
            self._free_slot(job)
        else:
            job.state = "running"
            job.started = time.monotonic()
        finally:
            for fd in set(fds):
                os.close(fd)

    def _kill(self, job: Job) -> None:
        if job.popen is None or job.popen.poll() is not None:
            return
        try:
            os.killpg(job.popen.pid, signal.SIGTERM)
            deadline = time.monotonic() + KILL_GRACE
            while job.popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if job.popen.poll() is None:
                os.killpg(job.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.popen.wait()
        self._pump_chirps(job)

    def _pump_chirps(self, job: Job) -> None:
        """Each complete line the pilot appended to its chirp file becomes a generic event."""
        if not job.chirp_path:
            return
        try:
            fd = os.open(job.chirp_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        try:
            os.lseek(fd, job.chirp_pos, os.SEEK_SET)
            data = os.read(fd, _CHIRP_READ_MAX)
        except OSError:
            return
        finally:
            os.close(fd)
        job.chirp_pos += len(data)
        data = job.chirp_partial + data
        *lines, job.chirp_partial = data.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace").strip()
            if text:
                self.log.write(ev.generic(self.cluster_id, job.proc, text))

    # --- commands from the backend -------------------------------------------------------------

    def _commands(self) -> None:
        try:
            names = sorted(os.listdir(self.cmd_dir))
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".tmp"):
                continue
            path = os.path.join(self.cmd_dir, name)
            with open(path) as f:
                reason = f.read().strip()
            os.unlink(path)
            _, verb, target = name.split("-", 2)
            jobs = self.jobs if target == "all" else [j for j in self.jobs if str(j.proc) == target]
            for job in jobs:
                if verb == "remove" and job.state != "ended":
                    self._kill(job)
                    self.log.write(ev.aborted(self.cluster_id, job.proc, reason or "via condor_rm"))
                    job.state = "ended"
                    self._free_slot(job)
                elif verb in ("release", "resubmit") and job.state == "held":
                    if verb == "resubmit":  # the reason is the memory (bytes) to run it with
                        job.memory_bytes = int(reason)
                    self.log.write(ev.released(self.cluster_id, job.proc))
                    self._start(job)

    # --- main loop -------------------------------------------------------------------------------

    def _poll_job(self, job: Job, max_runtime: float) -> None:
        self._pump_chirps(job)
        assert job.popen is not None
        rc = job.popen.poll()
        if rc is not None:
            self._pump_chirps(job)
            if rc < 0:
                self.log.write(ev.terminated(self.cluster_id, job.proc, signal=-rc))
            else:
                self.log.write(ev.terminated(self.cluster_id, job.proc, exit_code=rc))
            job.state = "ended"
            self._free_slot(job)
        elif time.monotonic() - job.started > max_runtime:
            self._kill(job)
            reason = f"The job exceeded allowed execute duration of {int(max_runtime)}s"
            self.log.write(ev.held(self.cluster_id, job.proc, reason, HOLD_CODE_DURATION))
            job.state = "held"
            self._free_slot(job)

    def _loop(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        for job in self.jobs:
            self._start(job)
        max_runtime = float(self.spec["max_runtime"])
        while any(j.state != "ended" for j in self.jobs):
            if self.stopping:
                for job in self.jobs:
                    if job.state != "ended":
                        self._kill(job)
                        self.log.write(
                            ev.aborted(self.cluster_id, job.proc, "via condor_rm (supervisor stopped)")
                        )
                        job.state = "ended"
                        self._free_slot(job)
                break
            self._commands()
            self._evict_quarantined()
            for job in self.jobs:
                if job.state == "running":
                    self._poll_job(job, max_runtime)
                elif job.state == "idle":
                    self._start(job)  # when a slot is free
            time.sleep(POLL)

    def run(self) -> None:
        with open(self.base + ".pid", "w") as f:
            f.write(str(os.getpid()))
        try:
            for job in self.jobs:
                self.log.write(ev.submit(self.cluster_id, job.proc))
            os.rename(self.spec_path, self.record_path)  # committed: find_cluster sees it from now on
        except Exception as e:
            with open(self.base + ".failed", "w") as f:
                f.write(f"{type(e).__name__}: {e}")
            raise
        reason = "via condor_rm"
        try:
            self._loop()
        except BaseException as e:  # a failing supervisor still ends its cluster
            traceback.print_exc()
            reason = f"EWMS: the local supervisor failed: {type(e).__name__}: {e}"
            for job in self.jobs:
                with contextlib.suppress(Exception):
                    self._kill(job)
        finally:
            for job in self.jobs:
                with contextlib.suppress(Exception):
                    self._free_slot(job)
            self.log.close()
            finish_cluster(self.record, self.base, reason)


def main() -> None:
    spec_path = sys.argv[1]
    if os.fork() > 0:  # detach: the submitting TMS returns at once, we outlive it
        os._exit(0)
    os.setsid()
    try:
        supervisor = Supervisor(spec_path)
    except Exception as e:  # tell the waiting submit why, at once
        with open(spec_path[: -len(".spec")] + ".failed", "w") as f:
            f.write(f"{type(e).__name__}: {e}")
        raise
    supervisor.run()


if __name__ == "__main__":
    main()
