"""Runs one task (or the init command) as a process, a docker container or an apptainer container.

The task reads its input from `$EWMS_TASK_INFILE` and writes its output to `$EWMS_TASK_OUTFILE`,
both in a fresh private temp dir that containers get bound at the same path. Exit 0 with an
output file is success; anything else raises `TaskFailed` with a short, groupable error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from .config import Command

LOGGER = logging.getLogger(__name__)

INFILE, OUTFILE = "in", "out"
SECRET_ENV = ("EWMS_PILOT_QUEUE_AUTH_FILE",)  # tasks need not know where the tokens are


class TaskFailed(Exception):
    """The task ran and failed (exit code, timeout, no output); the message is the error text."""


def build_argv(runner: str, cmd: Command, workdir: str, env: dict[str, str], name: str) -> list[str]:
    """The command line; for containers, `env` (task-only variables) is passed explicitly.
    Secrets never are (any user may read a command line): docker takes each by name from its
    own environment, apptainer as APPTAINERENV_<name> (process_env)."""
    args = shlex.split(cmd.args)
    if runner == "process":
        return [cmd.image, *args]
    env_flags = [f for k, v in sorted(env.items()) for f in ("--env", f"{k}={v}")]
    if runner == "docker":
        env_flags += [f for k in sorted(cmd.secrets) for f in ("--env", k)]
    if runner == "docker":
        return [
            "docker",
            "run",
            "--rm",
            "--init",
            "--name",
            name,
            "--user",
            f"{os.getuid()}:{os.getgid()}",
            "--mount",
            f"type=bind,source={workdir},target={workdir}",
            "--workdir",
            workdir,
            *env_flags,
            cmd.image,
            *args,
        ]
    if runner == "apptainer":
        return [
            "apptainer",
            "run",
            "--containall",
            "--cleanenv",
            "--no-home",
            "--bind",
            f"{workdir}:{workdir}",
            "--pwd",
            workdir,
            *env_flags,
            cmd.image,
            *args,
        ]
    raise ValueError(f"unknown runner {runner!r}")


def task_env(cmd: Command, workdir: str | None) -> dict[str, str]:
    """The variables the task sees beyond the base environment."""
    env = dict(cmd.env)
    if workdir is not None:
        env["EWMS_TASK_INFILE"] = os.path.join(workdir, INFILE)
        env["EWMS_TASK_OUTFILE"] = os.path.join(workdir, OUTFILE)
    return env


class Runner:
    """Starts tasks of one kind (`process`, `docker` or `apptainer`) under `work_dir`."""

    def __init__(self, runner: str, work_dir: str) -> None:
        self.runner = runner
        self.work_dir = work_dir

    async def run_task(self, cmd: Command, body: bytes, timeout: float | None) -> bytes:
        async with self._workdir() as workdir:
            with open(os.path.join(workdir, INFILE), "wb") as f:
                f.write(body)
            await self._run(cmd, workdir, task_env(cmd, workdir), timeout)
            try:
                with open(os.path.join(workdir, OUTFILE), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                raise TaskFailed("task exited 0 but wrote no EWMS_TASK_OUTFILE") from None

    async def run_init(self, cmd: Command, timeout: float | None) -> None:
        async with self._workdir() as workdir:
            await self._run(cmd, workdir, task_env(cmd, None), timeout)

    @contextlib.asynccontextmanager
    async def _workdir(self) -> AsyncIterator[str]:
        workdir = tempfile.mkdtemp(prefix="ewms-task-", dir=self.work_dir)  # mode 0700
        try:
            yield workdir
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _run(
        self, cmd: Command, workdir: str, extra_env: dict[str, str], timeout: float | None
    ) -> None:
        name = f"ewms-task-{uuid.uuid4().hex[:12]}"
        argv = build_argv(self.runner, cmd, workdir, extra_env, name)
        env = process_env(self.runner, extra_env, cmd.secrets)
        stderr_path = os.path.join(workdir, ".stderr")
        with open(stderr_path, "wb") as err:
            try:  # stdout goes to the pilot's (the job's) stdout; stderr is kept for the error
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=None if self.runner == "process" else workdir,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as e:
                raise TaskFailed(f"cannot start {argv[0]}: {e.strerror}") from None
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            await self._kill(proc, name)
            raise TaskFailed(f"task timed out after {timeout:g} s") from None
        except asyncio.CancelledError:  # pilot stopping or broker lost: do not leave orphans
            await self._kill(proc, name)
            raise
        if code != 0:
            tail = _last_line(stderr_path).replace(workdir, "<task-dir>")  # groupable
            LOGGER.info("task failed with exit code %s; stderr tail: %s", code, tail)
            raise TaskFailed(f"task exit code {code}" + (f": {tail}" if tail else ""))

    async def _kill(self, proc: asyncio.subprocess.Process, name: str) -> None:
        await kill_process(self.runner, proc.pid, name, proc.wait)

    async def close(self) -> None:
        """Nothing outlives a task here; the warm runner stops its workers."""


def process_env(
    runner: str, extra_env: dict[str, str], secrets: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of the started program: containers get `extra_env` as --env flags,
    and the task's secrets through the environment of the docker or apptainer command."""
    base = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    secrets = secrets or {}
    if runner == "process":
        return {**base, **extra_env, **secrets}
    if runner == "apptainer":  # passed into the container even with --cleanenv
        return {**base, **{f"APPTAINERENV_{k}": v for k, v in secrets.items()}}
    return {**base, **secrets}


async def kill_process(runner: str, pid: int, name: str, wait: Callable[[], Awaitable[object]]) -> None:
    """SIGKILL the program's process group (and its container), then `wait` for its end."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if runner == "docker":  # the container outlives its killed client
        killer = await asyncio.create_subprocess_exec(
            "docker", "kill", name, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await killer.wait()
    await wait()


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            return last_line(f.read())
    except OSError:
        return ""


def last_line(tail: bytes, limit: int = 300) -> str:
    """The last non-empty line of a stderr tail: the usual place of the error."""
    lines = [ln.strip() for ln in tail.decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:limit] if lines else ""
