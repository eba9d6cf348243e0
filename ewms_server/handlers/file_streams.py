"""Files through handlers without holding them in memory: uploads written to the file cache
chunk by chunk as they arrive (the body's back-pressure is the store's write), downloads
written out chunk by chunk (each flushed before the next is read)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import ClassVar

from ..errors import EWMSError, TooLarge
from ..storage.files_base import FileMissing, FileStore
from .base import BaseHandler

LOGGER = logging.getLogger("ewms_server.files")
_CLEANUPS: set[asyncio.Task[None]] = set()
"""Clean-ups of abandoned uploads, kept referenced until they are done."""


class UploadHandler(BaseHandler):
    """A route whose UPLOAD_METHOD body streams to `on_chunk` (never collected); any other
    method's body is collected as usual. A failure while receiving is the answer (its 4xx,
    or a logged 500), after `cleanup()`."""

    UPLOAD_METHOD: ClassVar[str] = "POST"
    LIMIT_SETTING: ClassVar[str] = "EWMS_JOBS_MAX_UPLOAD_BYTES"
    """The setting behind MAX_BODY_SETTING, named in the 413."""
    _received = 0
    _ok = False

    @property
    def files(self) -> FileStore:
        assert self.deps.files is not None
        return self.deps.files

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused or self.request.method != self.UPLOAD_METHOD:
            return super().data_received(chunk)
        return self._receive(chunk)

    async def _receive(self, chunk: bytes) -> None:
        self._received += len(chunk)
        try:
            if self._received > self._body_limit:
                raise TooLarge(f"upload is larger than {self._body_limit} bytes ({self.LIMIT_SETTING})")
            await self.on_chunk(chunk)
        except Exception as e:
            if not isinstance(e, EWMSError):
                LOGGER.exception("%s %s: upload failed", self.request.method, self.request.path)
            await self.cleanup()
            await self._refuse(e)

    async def on_chunk(self, chunk: bytes) -> None:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Drop what a failed or abandoned upload stored."""

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.request.method == self.UPLOAD_METHOD and not self._ok and not self.refused:
            task = asyncio.ensure_future(self.cleanup())  # the client went away mid-upload
            _CLEANUPS.add(task)
            task.add_done_callback(_CLEANUPS.discard)


async def send_file(
    handler: BaseHandler, chunks: AsyncIterator[bytes], content_type: str, size: int | None
) -> None:
    """Stream `chunks` as the response. An error before the first chunk (FileMissing) still
    becomes a JSON error: nothing was sent yet."""
    handler.set_header("Content-Type", content_type)
    if size is not None:
        handler.set_header("Content-Length", str(size))
    async for chunk in chunks:
        handler.write(chunk)
        await handler.flush()
    handler.finish()


__all__ = ["FileMissing", "UploadHandler", "send_file"]
