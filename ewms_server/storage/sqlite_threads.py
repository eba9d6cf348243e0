"""The threads that do SQLite's work off the event loop: worker pools, and the checkpointer.

WAL checkpoints copy the log back into the database file and fsync both; on an ordinary disk
that takes 10-300 ms. Left to SQLite (`wal_autocheckpoint`), the write transaction that
crosses the threshold runs it, so about one request in a hundred waited that long (measured:
the writer's p99 went from 0.3 ms to 5 ms, its max to 17 ms). Here a thread of its own runs
PASSIVE checkpoints instead, woken by the writer after each commit; writers and readers never
wait for it, and it never waits for them.
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

CHECKPOINT_SPACING_S = 0.05
"""Least time between two checkpoints: commits in between share one (and its fsyncs)."""
WAL_SAFETY_PAGES = 20_000
"""The writer's own autocheckpoint threshold (~80 MB of log): reached only if the
checkpointer cannot keep up, so the log stays bounded even then."""


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
        except Exception:  # the writer's safety threshold still bounds the log
            LOGGER.exception("SQLite checkpointer: cannot connect; the writer checkpoints instead")
            return
        try:
            while True:
                self._wake.wait()
                if self._stop.is_set():
                    return
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
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
