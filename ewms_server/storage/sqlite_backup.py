"""`ewms-server backup`: a consistent copy of the SQLite store, taken while servers run.

The copy is made with SQLite's online backup API, a few hundred pages per step, from inside
one read transaction on the source: in WAL mode a reader never blocks the writer, and the
snapshot it holds keeps every step on the same state of the store, so servers writing
meanwhile neither stall nor make the copy start over (without the snapshot, every commit by
another process restarts it). The copy is written to a 0600 temporary file beside the
target, switched out of WAL mode (one self-contained file), checked, synced, and only then
given its name: a crash leaves either no backup or a whole one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

PAGES_PER_STEP = 256
"""1 MiB of 4 KiB pages per backup step."""


class BackupError(Exception):
    """The backup cannot be made; the message says why (nothing was written)."""


@dataclass(frozen=True)
class BackupResult:
    path: str
    bytes: int
    pages: int
    layout_version: int
    seconds: float


def target_path(dest: str) -> str:
    """`dest`, or a time-stamped file name inside it when it is a directory."""
    if os.path.isdir(dest):
        return os.path.join(dest, time.strftime("ewms-%Y%m%dT%H%M%SZ.sqlite3", time.gmtime()))
    return dest


def backup(
    source: str,
    dest: str,
    *,
    force: bool = False,
    pages_per_step: int = PAGES_PER_STEP,
    on_step: Callable[[int, int], None] | None = None,
) -> BackupResult:
    """Copy the store at `source` to `dest` (see the module docstring); `on_step(remaining,
    total)` after each step. Raises BackupError."""
    t0 = time.monotonic()
    if not os.path.isfile(source):
        raise BackupError(f"no store at {source} (is EWMS_DATA_DIR right?)")
    path = target_path(dest)
    if os.path.abspath(path) == os.path.abspath(source):
        raise BackupError("the backup cannot replace the store itself")
    if os.path.exists(path) and not force:
        raise BackupError(f"{path} exists; pass --force to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BackupError(f"no directory {folder}")
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.partial")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # SQLite's journal copies the mode
    except OSError as e:
        raise BackupError(f"cannot write in {folder}: {e.strerror}") from None
    os.close(fd)
    try:
        n_pages, version = _copy(source, tmp, pages_per_step, on_step)
        _sync(tmp)
        _publish(tmp, path, force)
        _sync(folder)
    finally:
        for leftover in (tmp, tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return BackupResult(path, os.path.getsize(path), n_pages, version, round(time.monotonic() - t0, 3))


def _copy(
    source: str, tmp: str, pages_per_step: int, on_step: Callable[[int, int], None] | None
) -> tuple[int, int]:
    src = sqlite3.connect(source, timeout=30, isolation_level=None)
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        src.execute("PRAGMA query_only = 1")
        wal = src.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        if wal:  # hold one snapshot for all the steps (see the module docstring)
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        # outside WAL mode a held read lock would stop writers: then copy in one step
        progress = None if on_step is None else (lambda _status, left, total: on_step(left, total))
        src.backup(dst, pages=pages_per_step if wal else -1, progress=progress)
        if wal:
            src.execute("COMMIT")
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        check = dst.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy failed its integrity check: {check}")
        version = int(dst.execute("PRAGMA user_version").fetchone()[0])
        n_pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
    except sqlite3.Error as e:
        raise BackupError(f"cannot read the store {source}: {e}") from None
    finally:
        dst.close()
        src.close()
    return n_pages, version


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: str, path: str, force: bool) -> None:
    """Give the finished copy its name: never over an existing file unless `force`."""
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if `path` appeared meanwhile: nothing is overwritten
    except FileExistsError:
        raise BackupError(f"{path} exists; pass --force to replace it") from None
    except OSError:  # no hard links on this file system
        if os.path.exists(path):
            raise BackupError(f"{path} exists; pass --force to replace it") from None
        os.replace(tmp, path)
