"""The file cache seam: where jobs' input and output files live (issue 13).

Files are grouped by a namespace (a job id: server-made, safe as a path part) and named by
any text (the caller's sanitized relative path). A write streams chunk by chunk and becomes
visible only at `commit`, all at once (no reader ever sees half a file); `abort` leaves
nothing. Two implementations: a directory under EWMS_DATA_DIR (`files_dir`) and MongoDB
GridFS (`files_gridfs`); one conformance suite (tests/storage/test_files.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

CHUNK = 1024 * 1024
"""Bytes per chunk read back (and GridFS's chunk size)."""


class FileMissing(Exception):
    """No committed file of that name in that namespace."""


@dataclass(frozen=True)
class StoredFile:
    """What a committed write stored."""

    size: int
    sha256: str


class FileWriter(Protocol):
    async def write(self, data: bytes) -> None:
        """Append `data` (the caller waits: this is the upload's back-pressure)."""

    async def commit(self) -> StoredFile:
        """Make the file visible (replacing one of the same name); its size and digest."""

    async def abort(self) -> None:
        """Drop what was written; safe to call after commit (then it does nothing)."""


class FileStore(Protocol):
    def writer(self, namespace: str, name: str) -> FileWriter:
        """A new file (or a new version of one), written through the returned writer."""

    def read(self, namespace: str, name: str, start: int = 0) -> AsyncIterator[bytes]:
        """The file's bytes from `start`, in chunks of at most CHUNK; FileMissing if none."""

    async def names(self, namespace: str) -> list[str]:
        """The committed files of `namespace`, sorted."""

    async def delete_namespace(self, namespace: str) -> int:
        """Delete every file of `namespace`; return how many there were."""

    async def close(self) -> None: ...


class Digest:
    """Size and SHA-256 of a stream, as it passes."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._h.update(data)
        self.size += len(data)

    def result(self) -> StoredFile:
        return StoredFile(self.size, self._h.hexdigest())
