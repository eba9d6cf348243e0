"""A zip archive written as it is read: entries stored (not compressed: jobs' outputs are
often compressed already, and deflate would cost the server CPU per byte), each with a data
descriptor, Zip64 where sizes need it; every file's bytes pass through once, never whole."""

from __future__ import annotations

import time
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any


class _Sink:
    """A write-only stream zipfile writes into; `take()` empties it."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


def _account(out: Any, zf: zipfile.ZipFile, chunk: bytes) -> None:
    """What `out.write(chunk)` does for a stored entry (CRC, sizes, the archive's offset),
    without copying the bytes through zipfile's stream: the caller sends them itself."""
    out._crc = zlib.crc32(chunk, out._crc)
    out._file_size += len(chunk)
    out._compress_size += len(chunk)
    zf.fp.offset += len(chunk)  # type: ignore[union-attr]  # zipfile's _Tellable: an unseekable sink


async def zip_stream(
    entries: list[tuple[str, int]], read: Callable[[str], AsyncIterator[bytes]]
) -> AsyncIterator[bytes]:
    """The zip of `entries` (path, size), each path's bytes from `read(path)`."""
    sink = _Sink()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[call-overload]
        assert hasattr(zf.fp, "offset"), "zipfile no longer wraps an unseekable sink as before"
        for path, size in entries:
            info = zipfile.ZipInfo(path, date_time=stamp)
            info.file_size = size
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as out:
                yield sink.take()  # the local header
                async for chunk in read(path):
                    _account(out, zf, chunk)
                    yield chunk  # the data itself goes out as it came: no copy
            yield sink.take()  # the data descriptor
    yield sink.take()


async def _nothing(path: str) -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def zip_length(entries: list[tuple[str, int]]) -> int | None:
    """The exact length of `zip_stream(entries, …)`, so it can be sent with Content-Length;
    None past Zip64 sizes. Below 4 GiB in all, the archive's structure does not depend on
    the files' sizes: it is the structure of the same archive of empty files, plus the data."""
    total = sum(size for _, size in entries)
    if total + 1024 * (len(entries) + 1) >= zipfile.ZIP64_LIMIT // 2:
        return None
    empty = [(path, 0) for path, _ in entries]
    return sum([len(c) async for c in zip_stream(empty, _nothing)]) + total
