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


class _WorkerProcess(asyncio.SubprocessProtocol):
    """Watches one worker process: passes its stderr on to the job's, keeping a tail for error
    reports, and notices its exit even while a child of it still holds that stderr open (which
    `Process.wait()` would wait for)."""

    def __init__(self) -> None:
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tail = b""

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self.tail = (self.tail + data)[-STDERR_TAIL:]
        with contextlib.suppress(OSError):
            _write_all(2, data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class WarmWorker:
    """One running task program and its connection."""

    def __init__(
        self,
        runner: str,
        cmd: Command,
        workdir: str,
        name: str,
        transport: asyncio.SubprocessTransport,
        watch: _WorkerProcess,
    ) -> None:
        self.runner = runner
        self.cmd = cmd
        self.workdir = workdir
        self.name = name
        self.pid = transport.get_pid()
        self._transport = transport
        self._watch = watch
        self._exited = watch.exited
        self._exited.add_done_callback(self._on_exit)
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
            transport, watch = await asyncio.get_running_loop().subprocess_exec(
                _WorkerProcess,
                *argv,
                cwd=None if runner == "process" else workdir,
                env=process_env(runner, extra_env, cmd.secrets),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=None,  # the job's, as for any task
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            listener.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise WorkerBroken(f"cannot start {argv[0]}: {e.strerror}") from None
        worker = cls(runner, cmd, workdir, name, transport, watch)
        try:
            await worker._connect(listener, timeout)
        except BaseException:
            await worker.kill()
            raise
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(sock_path)  # nobody else may connect
        LOGGER.info("warm worker %s started (pid %d)", name, worker.pid)
        return worker

    async def call(self, body: bytes, timeout: float | None) -> bytes:
        """One task; TaskFailed if it failed (the worker stays), WorkerBroken if the worker did."""
        self._last_id += 1
        try:
            async with asyncio.timeout(timeout):  # the hot path: no task or future per call
                return await self._exchange(self._last_id, body)
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

    @property
    def returncode(self) -> int | None:
        return self._transport.get_returncode()

    async def kill(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if not self.exited:  # now, even if cancelled while reaping below
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        try:
            await kill_process(self.runner, self.pid, self.name, lambda: asyncio.shield(self._exited))
        finally:
            self._transport.close()  # our end of its stderr, even if a child still holds it

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
        output_inline = False
        try:
            if task.infile is not None:
                await _in_thread(_write_new, task.infile, body)
            self._writer.write(encode_task(task))
            await self._writer.drain()
            output = decode_reply(await self._reader.readuntil(b"\n"), task)
            output_inline = output is not None
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
        finally:  # an inline success left no file: spare the syscall
            for path in (task.infile, None if output_inline else task.outfile):
                if path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(path)

    def _on_exit(self, _: object) -> None:
        """Its end of the socket closes with the process, unless a child inherited it: then
        break the connection ourselves, after a moment to read what the worker last sent."""
        if self._writer is not None:
            asyncio.get_running_loop().call_later(EXIT_GRACE / 10, self._writer.transport.abort)

    async def _until_exit(self, aw: Awaitable[T], timeout: float | None) -> T:
        """`aw`'s result; _Exited if the worker process ends first, TimeoutError past `timeout`."""
        work = asyncio.ensure_future(aw)
        waiting: set[asyncio.Future[Any]] = {work, self._exited}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
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
        code = self.returncode
        if code is None:
            how = "closed its connection"
        elif code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        tail = last_line(self._watch.tail).replace(self.workdir, "<task-dir>")  # groupable
        return f"{what} ({how})" + (f": {tail}" if tail else "")


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """A large payload's file, off the event loop; a failure (disk full, a file planted by the
    worker) fails the task, and a fresh worker gets a fresh dir."""
    try:
        return await asyncio.to_thread(func, *args)
    except OSError as e:
        raise WorkerBroken(f"warm worker task file {os.path.basename(args[0])}: {e.strerror}") from None


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
            LOGGER.warning("warm worker %s exited while idle (%s)", worker.name, worker.returncode)
            self._idle.remove(worker)
            await self._retire(worker)
        for i, worker in enumerate(self._idle):
            if worker.cmd == cmd:
                return self._idle.pop(i)
        return None

    async def _retire(self, worker: WarmWorker) -> None:
        self._all.discard(worker)
        await worker.kill()
