"""Jobs over HTTP (issue 13): a streamed multipart upload (files are read as they are sent,
never whole), status, listings, and streamed downloads."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote

import requests

from .client import ClientError, _http_error

CHUNK = 1024 * 1024
Progress = Callable[[int, int], None]
"""(bytes done, bytes in all)."""


@dataclass(frozen=True)
class Part:
    """A form field (`data`) or a file (`path` on disk, sent as `filename`)."""

    name: str
    filename: str | None = None
    path: str | None = None
    data: bytes = b""

    def size(self) -> int:
        return os.path.getsize(self.path) if self.path is not None else len(self.data)


class MultipartBody:
    """multipart/form-data of `parts`, with a known length (so requests sends Content-Length)
    and produced chunk by chunk as it is sent."""

    def __init__(self, parts: list[Part], progress: Progress | None = None) -> None:
        self.boundary = "ewms-" + secrets.token_hex(16)
        self.parts = parts
        self.progress = progress
        self._heads = [self._head(p) for p in parts]
        self._tail = f"--{self.boundary}--\r\n".encode()
        self.length = sum(len(h) + p.size() + 2 for h, p in zip(self._heads, parts, strict=True)) + len(
            self._tail
        )

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, p: Part) -> bytes:
        disp = f'form-data; name="{p.name}"'
        if p.filename is not None:
            quoted = p.filename.replace("\\", "\\\\").replace('"', '\\"')
            disp += f'; filename="{quoted}"'
        return f"--{self.boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode()

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        done = 0
        for head, p in zip(self._heads, self.parts, strict=True):
            for piece in self._pieces(head, p):
                done += len(piece)
                if self.progress is not None:
                    self.progress(done, self.length)
                yield piece
        yield self._tail
        if self.progress is not None:
            self.progress(self.length, self.length)

    @staticmethod
    def _pieces(head: bytes, p: Part) -> Iterator[bytes]:
        yield head
        if p.path is None:
            yield p.data
        else:
            with open(p.path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        yield b"\r\n"


def job_parts(files: list[str], fields: dict[str, str]) -> list[Part]:
    """The first file is the script (sent as run.sh); the others keep their base names."""
    if not files:
        raise ClientError("give run.sh (the script) first, then its input files")
    parts = []
    for i, path in enumerate(files):
        if not os.path.isfile(path):
            raise ClientError(f"{path}: no such file")
        name = "run.sh" if i == 0 else os.path.basename(path)
        parts.append(Part("file", filename=name, path=path))
    names = [p.filename for p in parts]
    if len(set(names)) != len(names):
        raise ClientError("two input files have the same name")
    parts += [Part(k, data=v.encode()) for k, v in fields.items() if v]
    return parts


class JobsClient:
    def __init__(self, url: str, token: str, *, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, **kw: Any) -> requests.Response:
        try:
            r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
            r.raise_for_status()
            return r
        except requests.HTTPError as e:
            raise ClientError(_http_error(e)) from None
        except requests.RequestException as e:
            raise ClientError(f"cannot reach the EWMS server at {self.url}: {type(e).__name__}") from None

    def submit(self, parts: list[Part], progress: Progress | None = None) -> dict[str, Any]:
        body = MultipartBody(parts, progress)
        r = self._call("POST", "/v1/jobs", data=body, headers={"Content-Type": body.content_type})
        return dict(r.json())

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/jobs/{quote(job_id, safe='')}?format=json").json())

    def jobs(self) -> list[dict[str, Any]]:
        return [dict(j) for j in self._call("GET", "/v1/jobs").json()["jobs"]]

    def files(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/v1/jobs/{quote(job_id, safe='')}/files").json()["files"])

    def delete(self, job_id: str) -> None:
        self._call("DELETE", f"/v1/jobs/{quote(job_id, safe='')}")

    def download(self, job_id: str, out: BinaryIO, path: str | None = None) -> int:
        """The zip (or one output file) into `out`, streamed; the bytes written."""
        where = f"/v1/jobs/{quote(job_id, safe='')}" + (f"/files/{quote(path)}" if path else "?format=zip")
        r = self._call("GET", where, stream=True)
        if path is None and r.headers.get("Content-Type") != "application/zip":
            raise ClientError(f"job {job_id} has not finished: {r.json().get('status')}")
        n = 0
        for chunk in r.iter_content(CHUNK):
            out.write(chunk)
            n += len(chunk)
        return n
