"""The packaged static files (the dashboard, Swagger UI), read once from the installed package.

Only files found here are ever served: a request names a key of this table, never a path on
disk, so no request can reach anything else."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
from dataclasses import dataclass
from importlib.resources.abc import Traversable

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE, NOTICE
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _walk(root: Traversable, prefix: str = "") -> dict[str, StaticFile]:
    out: dict[str, StaticFile] = {}
    for entry in root.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            out.update(_walk(entry, name + "/"))
            continue
        suffix = "." + entry.name.rsplit(".", 1)[1] if "." in entry.name else ""
        if suffix not in CONTENT_TYPES:
            continue  # source maps and stray files are not served
        body = entry.read_bytes()
        out[name] = StaticFile(body, CONTENT_TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return out


def load(bundle: str) -> dict[str, StaticFile]:
    """Every file of `ewms_server/static/<bundle>/`, by its path inside the bundle."""
    return _walk(importlib.resources.files("ewms_server").joinpath("static", bundle))


class StaticBundle:
    """One bundle, read on first use in a thread (Swagger UI is ~2 MB), then kept. The files
    never change, so two first requests racing both read them, harmlessly: no lock, and the
    object may be shared by servers on different event loops (tests)."""

    def __init__(self, bundle: str) -> None:
        self.bundle = bundle
        self._files: dict[str, StaticFile] | None = None

    async def get(self, name: str) -> StaticFile | None:
        if self._files is None:
            self._files = await asyncio.to_thread(load, self.bundle)
        return self._files.get(name)
