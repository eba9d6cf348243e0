"""The threads that do SQLite's work off the event loop: worker pools, and the checkpointer.

WAL checkpoints copy the log back into the database file and fsync both; on an ordinary disk
that takes 10-300 ms. Left to SQLite (`wal_autocheckpoint`, 1,000 pages), the write
transaction that crosses the threshold runs it: measured on pending-starter claims at one
connection, one claim in 130 held the writer over 2 ms (up to 30 ms). Here a thread of its
own runs PASSIVE checkpoints instead, woken by commits; writers and readers never wait for it
(one claim in 1,000 over 2 ms; the writer's p99 from 0.5 to 0.25 ms, the request's from 1.5-2.9
to 1.1 ms, inside the server). Under a steady stream of writes a checkpoint never quite
catches up with the writer, and the log is rewound only once one does: when writes pause, or
when the log passes WRITER_CHECKPOINT_PAGES and the writer checkpoints itself, copying only
what was written since the checkpointer's last pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

LOGGER = logging.getLogger("ewms_server.storage")
T = TypeVar("T")

CHECKPOINT_SPACING_S = 0.5
"""Least time between two checkpoints: the commits in between share one (and its fsyncs).
0.05 to 2 s made no difference to the writer's stalls; fewer fsyncs spare a shared disk."""
WRITER_CHECKPOINT_PAGES = 20_000
"""The writer's own autocheckpoint threshold (~80 MB of log): what bounds the log under
steady writes (see the module docstring)."""


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Workers:
    """`n` threads, each with its own connection, taking jobs from one queue. `after` runs
    in the thread after every job (the writer wakes the checkpointer with it)."""

    def __init__(
        self,
        name: str,
        n: int,
        connect: Callable[[], sqlite3.Connection],
        after: Callable[[], None] | None = None,
    ) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._after = after
        self._threads = [
            threading.Thread(target=self._run, args=(connect,), name=f"{name}-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def _run(self, connect: Callable[[], sqlite3.Connection]) -> None:
        conn: sqlite3.Connection | None = None
        error: BaseException | None = None
        try:
            conn = connect()
        except Exception as e:  # every job then fails with it (the store is unusable)
            error = e
        try:
            while (job := self._jobs.get()) is not None:
                loop, fut, fn = job
                try:
                    if conn is None:
                        raise error or RuntimeError("no connection")
                    value, ok = fn(conn), True
                except BaseException as e:
                    value, ok = e, False
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                    loop.call_soon_threadsafe(_settle, fut, ok, value)
                if self._after is not None:
                    self._after()
        finally:
            if conn is not None:
                conn.close()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, fut, fn))
        return await fut

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()


class Checkpointer:
    """One thread running `PRAGMA wal_checkpoint(PASSIVE)` after writes (see the module
    docstring). Several server processes on one file each run one; a checkpoint that finds
    another in progress just returns."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.n_checkpoints = 0
        self._thread = threading.Thread(
            target=self._run, args=(connect,), name="ewms-sqlite-checkpointer", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self, connect: Callable[[], sqlite3.Connection]) -> None:
        try:
            conn = connect()
        except Exception:  # the writer's own threshold still bounds the log
            LOGGER.exception("SQLite checkpointer: cannot connect; the writer checkpoints instead")
            return
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                try:
                    # a read first: a connection opened before the file was switched to WAL
                    # learns it only then (until it does, its checkpoints do nothing)
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
                    log = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                    if log >= 0:  # -1: not (yet) in WAL mode
                        self.n_checkpoints += 1
                except sqlite3.OperationalError as e:  # busy or locked: the next wake retries
                    LOGGER.debug("SQLite checkpoint skipped: %s", e)
                if self._stop.wait(CHECKPOINT_SPACING_S):
                    return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()
