"""The `warm` runner: the task program starts once per slot and serves task after task.

Each worker gets a private 0700 dir (bound into its container at the same path, as a task dir
is) holding the unix socket it connects back to (`$EWMS_WARM_SOCKET`); the line protocol is in
`warm_protocol` and docs/warm-runner.md. Same contract as `Runner.run_task`: bytes in, bytes
out, `TaskFailed` on failure. A worker that dies, breaks the protocol, times out or is
cancelled mid-task is killed, and the next task starts a fresh one; the consumer returns the
message, so the queue's delivery limit still bounds a message that kills every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .config import Command
from .runner import Runner, TaskFailed, build_argv, kill_process, last_line, process_env
from .warm_protocol import (
    INLINE_MAX,
    MAX_LINE,
    SOCKET_ENV,
    SOCKET_NAME,
    ProtocolError,
    RemoteTaskError,
    Task,
    check_hello,
    decode_reply,
    encode_task,
    unix_address,
)

LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
STDERR_TAIL = 4096
EXIT_GRACE = 3.0  # seconds a worker has to exit once its connection is closed


class WorkerBroken(TaskFailed):
    """The worker cannot serve another task (died, broke the protocol, timed out, never ready)."""


class _Exited(Exception):
    """The worker process ended while we waited on it."""


def worker_command(runner: str, cmd: Command, workdir: str, name: str) -> tuple[list[str], dict[str, str]]:
    """The command line and the task's own variables, its dir bound into containers as a task
    dir is (so the socket path is the same inside)."""
    extra_env = {**cmd.env, SOCKET_ENV: os.path.join(workdir, SOCKET_NAME)}
    return build_argv(runner, cmd, workdir, extra_env, name), extra_env


class WarmWorker:
    """One running task program and its connection."""

    def __init__(
        self, runner: str, cmd: Command, workdir: str, name: str, proc: asyncio.subprocess.Process
    ) -> None:
        self.runner = runner
        self.cmd = cmd
        self.workdir = workdir
        self.name = name
        self.proc = proc
        self._exited = asyncio.ensure_future(proc.wait())
        self._stderr = asyncio.ensure_future(self._pump_stderr())
        self._tail = b""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_id = 0

    @classmethod
    async def start(cls, runner: str, cmd: Command, work_dir: str, timeout: float) -> WarmWorker:
        """Start the program and wait for its hello; WorkerBroken if it never gets there."""
        workdir = tempfile.mkdtemp(prefix="ewms-warm-", dir=work_dir)  # mode 0700
        sock_path = os.path.join(workdir, SOCKET_NAME)
        name = f"ewms-warm-{uuid.uuid4().hex[:12]}"
        argv, extra_env = worker_command(runner, cmd, workdir, name)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(sock_path) as address:
                listener.bind(address)
            listener.listen(1)
            listener.setblocking(False)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=None if runner == "process" else workdir,
                env=process_env(runner, extra_env),
                stdin=asyncio.subprocess.DEVNULL,  # stdout is the job's, as for any task
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            listener.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise WorkerBroken(f"cannot start {argv[0]}: {e.strerror}") from None
        worker = cls(runner, cmd, workdir, name, proc)
        try:
            await worker._connect(listener, timeout)
        except BaseException:
            await worker.kill()
            raise
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(sock_path)  # nobody else may connect
        LOGGER.info("warm worker %s started (pid %d)", name, proc.pid)
        return worker

    async def call(self, body: bytes, timeout: float | None) -> bytes:
        """One task; TaskFailed if it failed (the worker stays), WorkerBroken if the worker did."""
        self._last_id += 1
        try:
            return await self._until_exit(self._exchange(self._last_id, body), timeout)
        except TimeoutError:
            raise WorkerBroken(f"task timed out after {timeout:g} s") from None
        except _Exited:
            raise WorkerBroken(self._death("warm worker died during the task")) from None

    async def stop(self) -> None:
        """Close the connection (the worker's cue to exit), then kill it if it lingers."""
        if self._writer is not None:
            self._writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), EXIT_GRACE)
        except TimeoutError:
            LOGGER.warning("warm worker %s did not exit on its own: killing it", self.name)
        await self.kill()

    @property
    def exited(self) -> bool:
        return self._exited.done()

    async def kill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.proc.returncode is None:  # now, even if cancelled while reaping below
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        await kill_process(self.runner, self.proc, self.name)
        try:  # a grandchild in another session may hold stderr open: do not wait for it
            await asyncio.wait_for(self._stderr, 1)
        except TimeoutError:
            pass

    # -- internals ------------------------------------------------------------------------

    async def _connect(self, listener: socket.socket, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn, _ = await self._until_exit(loop.sock_accept(listener), timeout)
            self._reader, self._writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_LINE)
            check_hello(await self._until_exit(self._reader.readuntil(b"\n"), timeout))
        except TimeoutError:
            raise WorkerBroken(f"warm worker not ready after {timeout:g} s") from None
        except (_Exited, asyncio.IncompleteReadError, ConnectionError):
            raise WorkerBroken(self._death("warm worker exited before it was ready")) from None
        except (ProtocolError, asyncio.LimitOverrunError) as e:
            raise WorkerBroken(f"warm worker broke the protocol: {e}") from None

    async def _exchange(self, task_id: int, body: bytes) -> bytes:
        assert self._reader is not None and self._writer is not None
        base = os.path.join(self.workdir, str(task_id))
        if len(body) <= INLINE_MAX:
            task = Task(task_id, f"{base}.out", data=body)
        else:
            task = Task(task_id, f"{base}.out", infile=f"{base}.in")
        try:
            if task.infile is not None:
                await _in_thread(_write_new, task.infile, body)
            self._writer.write(encode_task(task))
            await self._writer.drain()
            output = decode_reply(await self._reader.readuntil(b"\n"), task)
            if output is None:
                output = await _in_thread(_read_regular, task.outfile)
            return output
        except ProtocolError as e:
            raise WorkerBroken(f"warm worker broke the protocol: {e}") from None
        except RemoteTaskError as e:
            raise TaskFailed(f"task failed: {str(e)[:300]}") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            await self._wait_exit()
            raise _Exited() from None
        except asyncio.LimitOverrunError:
            raise WorkerBroken(
                f"warm worker broke the protocol: reply longer than {MAX_LINE} bytes"
            ) from None
        finally:
            for path in (task.infile, task.outfile):
                if path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(path)

    async def _until_exit(self, aw: Awaitable[T], timeout: float | None) -> T:
        """`aw`'s result; _Exited if the worker process ends first, TimeoutError past `timeout`."""
        work = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait(
                {work, self._exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not work.done():
                work.cancel()
        if work in done:
            return work.result()
        if self._exited in done:
            raise _Exited()
        raise TimeoutError()

    async def _wait_exit(self) -> None:
        """The connection broke: give the process a moment to end, for its exit status."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), EXIT_GRACE)

    def _death(self, what: str) -> str:
        code = self.proc.returncode
        if code is None:
            how = "closed its connection"
        elif code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        tail = last_line(self._tail).replace(self.workdir, "<task-dir>")  # groupable
        return f"{what} ({how})" + (f": {tail}" if tail else "")

    async def _pump_stderr(self) -> None:
        """Pass the worker's stderr on to the job's, keeping a tail for error reports."""
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self._tail = (self._tail + chunk)[-STDERR_TAIL:]
            with contextlib.suppress(OSError):
                _write_all(2, chunk)


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """A large payload's file, off the event loop; any failure means a worker we cannot trust."""
    try:
        return await asyncio.to_thread(func, *args)
    except OSError as e:
        raise ProtocolError(f"task file {os.path.basename(args[0])}: {e.strerror}") from None


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with open(fd, "wb") as f:
        f.write(data)


def _read_regular(path: str) -> bytes:
    """The worker's output file, never what a symlink planted by the worker points at."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return f.read()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class WarmRunner(Runner):
    """Keeps one warm worker per concurrent task (the init command still runs per message)."""

    def __init__(self, runner: str, work_dir: str, start_timeout: float) -> None:
        super().__init__(runner, work_dir)
        self.start_timeout = start_timeout
        self._idle: list[WarmWorker] = []
        self._all: set[WarmWorker] = set()

    async def run_task(self, cmd: Command, body: bytes, timeout: float | None) -> bytes:
        worker = await self._take_idle(cmd)
        if worker is None:
            worker = await WarmWorker.start(self.runner, cmd, self.work_dir, self.start_timeout)
            self._all.add(worker)
        try:
            output = await worker.call(body, timeout)
        except WorkerBroken as e:
            LOGGER.warning("replacing warm worker %s: %s", worker.name, e)
            await self._retire(worker)
            raise
        except TaskFailed:
            self._idle.append(worker)  # the task failed, the worker is fine
            raise
        except BaseException:  # cancelled mid-task (stop grace over, broker lost)
            await self._retire(worker)
            raise
        self._idle.append(worker)
        return output

    async def close(self) -> None:
        workers, self._all, self._idle = list(self._all), set(), []
        await asyncio.gather(*(w.stop() for w in workers))

    async def _take_idle(self, cmd: Command) -> WarmWorker | None:
        for worker in [w for w in self._idle if w.exited]:  # died between tasks: no task lost
            LOGGER.warning("warm worker %s exited while idle (%s)", worker.name, worker.proc.returncode)
            self._idle.remove(worker)
            await self._retire(worker)
        for i, worker in enumerate(self._idle):
            if worker.cmd == cmd:
                return self._idle.pop(i)
        return None

    async def _retire(self, worker: WarmWorker) -> None:
        self._all.discard(worker)
        await worker.kill()
