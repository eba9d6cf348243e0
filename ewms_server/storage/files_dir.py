"""The file cache in a directory (the embedded store's): `<root>/<namespace>/<hash of name>`.

The root and every namespace directory are 0700, files 0600. A name is stored as the
SHA-256 of its text, so no name can reach outside its directory or trip over the file
system's limits; a sidecar `<hash>.name` keeps the text for listing. Writes go to a temp file
in a thread (in batches, so an upload costs few thread hops) and reach their name by an
atomic rename; reads run in a thread too: the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

from .files_base import CHUNK, Digest, FileMissing, StoredFile

BATCH = 1024 * 1024
"""Bytes gathered before one write in a thread."""


def _key(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


class DirectoryWriter:
    """Batches of BATCH bytes go to a thread that hashes and writes them (os.writev, no
    joining copy); the next batch is gathered meanwhile, and waits for the previous one."""

    def __init__(self, directory: str, name: str) -> None:
        self._dir = directory
        self._name = name
        self._digest = Digest()
        self._pending: list[bytes] = []
        self._pending_n = 0
        self._writing: asyncio.Future[None] | None = None
        self._fd: int | None = None
        self._tmp: str | None = None
        self._done = False

    def _open(self) -> None:
        _private_dir(self._dir)
        self._fd, self._tmp = tempfile.mkstemp(prefix=".part-", dir=self._dir)  # 0600

    def _write(self, batch: list[bytes]) -> None:
        if self._fd is None:
            self._open()
        assert self._fd is not None
        for data in batch:
            self._digest.update(data)  # hashlib lets the event loop run meanwhile
        views = [memoryview(d) for d in batch if d]
        while views:
            n = os.writev(self._fd, views[:512])
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_n += len(data)
        if self._pending_n >= BATCH:
            await self._flush()

    async def _flush(self) -> None:
        """Hand the pending batch to the writer thread, once the previous one is written."""
        batch, self._pending, self._pending_n = self._pending, [], 0
        if self._writing is not None:
            await self._writing
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, batch))

    async def commit(self) -> StoredFile:
        await self._flush()
        assert self._writing is not None
        await self._writing
        await asyncio.to_thread(self._commit)
        self._done = True
        return self._digest.result()

    def _commit(self) -> None:
        if self._fd is None:
            self._open()
        assert self._fd is not None and self._tmp is not None
        os.close(self._fd)
        self._fd = None
        key = os.path.join(self._dir, _key(self._name))
        fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=self._dir)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(self._name)
        os.replace(tmp_name, key + ".name")
        os.replace(self._tmp, key)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._pending = []
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


class DirectoryFileStore:
    """`FileStore` under `root` (created 0700)."""

    def __init__(self, root: str) -> None:
        self.root = root
        _private_dir(root)

    def _dir(self, namespace: str) -> str:
        if not namespace or "/" in namespace or namespace in (".", "..") or "\0" in namespace:
            raise ValueError(f"bad namespace {namespace!r}")
        return os.path.join(self.root, namespace)

    def writer(self, namespace: str, name: str) -> DirectoryWriter:
        return DirectoryWriter(self._dir(namespace), name)

    async def read(self, namespace: str, name: str, start: int = 0) -> AsyncIterator[bytes]:
        path = os.path.join(self._dir(namespace), _key(name))
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise FileMissing(f"{namespace}: no file {name!r}") from None
        try:
            if start:
                f.seek(start)
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
        finally:
            f.close()

    async def names(self, namespace: str) -> list[str]:
        return await asyncio.to_thread(self._names, self._dir(namespace))

    @staticmethod
    def _names(directory: str) -> list[str]:
        out = []
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.endswith(".name") and entry[: -len(".name")] in entries:
                with open(os.path.join(directory, entry), encoding="utf-8", errors="surrogatepass") as f:
                    out.append(f.read())
        return sorted(out)

    async def delete_namespace(self, namespace: str) -> int:
        directory = self._dir(namespace)
        n = len(await self.names(namespace))
        await asyncio.to_thread(shutil.rmtree, directory, True)
        return n

    async def close(self) -> None:
        return None
