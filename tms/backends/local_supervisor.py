"""One local cluster's stand-in for the schedd: runs its jobs, writes its job event log.

Started detached by ``LocalBackend.submit`` as ``python -m tms.backends.local_supervisor <spec>``.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time

from . import eventlog_writer as ev

POLL = 0.1
KILL_GRACE = 5.0
HOLD_CODE_DURATION = 47  # HTCondor's hold code for exceeding allowed_execute_duration


class Job:
    def __init__(self, proc: int) -> None:
        self.proc = proc
        self.popen: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.chirp_path = ""
        self.chirp_pos = 0
        self.chirp_partial = b""
        self.state = "idle"  # idle | running | held | ended


class Supervisor:
    def __init__(self, spec_path: str) -> None:
        with open(spec_path) as f:
            record = json.load(f)
        self.spec_path = spec_path
        self.cluster_id = int(record["cluster_id"])
        self.command: list[str] = record["command"]
        self.spec = record["spec"]
        base = spec_path[: -len(".spec")]
        self.record_path = base + ".json"
        self.done_path = base + ".done"
        self.cmd_dir = base + ".cmd"
        self.log = ev.EventLogWriter(self.spec["job_event_log_fpath"])
        self.jobs = [Job(p) for p in range(int(self.spec["n_workers"]))]
        self.stopping = False

    # --- jobs ----------------------------------------------------------------------------------

    def _limits(self, proc: int) -> None:
        """In the child: the requested memory, disk (per file) and cores, where the OS allows."""
        os.setsid()
        for rlimit, value in (
            (resource.RLIMIT_AS, self.spec["memory_bytes"]),
            (resource.RLIMIT_FSIZE, self.spec["disk_bytes"]),
        ):
            try:
                resource.setrlimit(rlimit, (value, value))
            except (ValueError, OSError):
                pass
        try:
            # spread jobs over the machine's CPUs instead of stacking them all on the first
            allowed = sorted(os.sched_getaffinity(0))
            n = min(max(1, int(self.spec["n_cores"])), len(allowed))
            start = (self.cluster_id + proc) * n
            os.sched_setaffinity(0, [allowed[(start + i) % len(allowed)] for i in range(n)])
        except (AttributeError, OSError):
            pass

    def _start(self, job: Job) -> None:
        job_dir = self.spec["job_dir"]
        job.chirp_path = os.path.join(job_dir, f"chirp.{self.cluster_id}.{job.proc}")
        open(job.chirp_path, "ab").close()
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR") if k in os.environ}
        env.update(self.spec["environment"])
        env.update(
            {
                "EWMS_PILOT_RUNNER": "process",
                "EWMS_PILOT_CHIRP": "file",
                "EWMS_PILOT_CHIRP_FILE": job.chirp_path,
                "_CONDOR_SCRATCH_DIR": job_dir,
                "CLUSTER_ID": str(self.cluster_id),
                "PROC_ID": str(job.proc),
            }
        )
        if self.spec["transfer_stdouterr"]:
            out = open(os.path.join(job_dir, f"{self.cluster_id}.{job.proc}.out"), "ab")
            err = open(os.path.join(job_dir, f"{self.cluster_id}.{job.proc}.err"), "ab")
        else:
            out = err = open(os.devnull, "wb")
        self.log.write(ev.execute(self.cluster_id, job.proc))
        try:
            job.popen = subprocess.Popen(
                self.command,
                env=env,
                cwd=job_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                preexec_fn=functools.partial(self._limits, job.proc),
            )
        except OSError as e:
            self.log.write(
                ev.held(
                    self.cluster_id, job.proc, f"Failed to execute '{shlex.join(self.command)}': {e}", 6, 2
                )
            )
            job.state = "held"
        else:
            job.state = "running"
            job.started = time.monotonic()
        finally:
            out.close()
            if err is not out:
                err.close()

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
            with open(job.chirp_path, "rb") as f:
                f.seek(job.chirp_pos)
                data = f.read()
        except OSError:
            return
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
                elif verb == "release" and job.state == "held":
                    self.log.write(ev.released(self.cluster_id, job.proc))
                    self._start(job)

    # --- main loop -------------------------------------------------------------------------------

    def run(self) -> None:
        with open(self.record_path[: -len(".json")] + ".pid", "w") as f:
            f.write(str(os.getpid()))
        for job in self.jobs:
            self.log.write(ev.submit(self.cluster_id, job.proc))
        os.rename(self.spec_path, self.record_path)  # committed: find_cluster sees it from now on
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
                break
            self._commands()
            for job in self.jobs:
                if job.state != "running":
                    continue
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
                elif time.monotonic() - job.started > max_runtime:
                    self._kill(job)
                    self.log.write(
                        ev.held(
                            self.cluster_id,
                            job.proc,
                            f"The job exceeded allowed execute duration of {int(max_runtime)}s",
                            HOLD_CODE_DURATION,
                        )
                    )
                    job.state = "held"
            time.sleep(POLL)
        self.log.write(ev.cluster_removed(self.cluster_id, len(self.jobs)))
        self.log.close()
        open(self.done_path, "w").close()


def main() -> None:
    spec_path = sys.argv[1]
    if os.fork() > 0:  # detach: the submitting TMS returns at once, we outlive it
        os._exit(0)
    os.setsid()
    Supervisor(spec_path).run()


if __name__ == "__main__":
    main()
