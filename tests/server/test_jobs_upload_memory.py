"""A 1 GB job upload streams into the file cache: the server process's RSS grows by < 50 MB
(issue 13). `ewms-server` runs as a subprocess, so its RSS is its own."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.processes import PeakRSS
from tests.server.server_process import ServerProcess, free_port, token

GB = 1 << 30
PIECE = 1 << 20
LIMIT_MB = 50


class Body:
    """multipart/form-data of run.sh and a 1 GB file, made as it is sent (length known)."""

    boundary = "bench-boundary-0123456789"

    def __init__(self) -> None:
        b = self.boundary
        self.parts = [
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="run.sh"\r\n\r\ntrue\n\r\n'.encode(),
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'.encode(),
        ]
        self.tail = f"\r\n--{b}--\r\n".encode()
        self.digest = hashlib.sha256()

    def __len__(self) -> int:
        return sum(map(len, self.parts)) + GB + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts
        piece = bytes(range(256)) * (PIECE // 256)
        for _ in range(GB // PIECE):
            self.digest.update(piece)
            yield piece
        yield self.tail


def test_a_1gb_upload_streams_in_with_little_memory(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", free_port(), tmp_path / "server.log",
                        env={"EWMS_JOBS_MAX_UPLOAD_BYTES": str(2 * GB), "EWMS_HTTP_BODY_TIMEOUT_S": "300"})  # fmt: skip
    srv.start()
    try:
        assert srv.proc is not None
        requests.get(srv.url + "/v1/health", timeout=10)
        body = Body()
        with PeakRSS(srv.proc.pid) as rss:
            r = requests.post(
                srv.url + "/v1/jobs",
                data=body,
                headers={
                    "Authorization": f"Bearer {token()}",
                    "Content-Type": f"multipart/form-data; boundary={body.boundary}",
                },
                timeout=300,
            )
        assert r.status_code == 201, r.text
        job = requests.get(
            f"{srv.url}/v1/jobs/{r.json()['id']}?format=json",
            headers={"Authorization": f"Bearer {token()}"},
            timeout=30,
        ).json()
        big = next(f for f in job["inputs"] if f["path"] == "big.bin")
        assert (big["size"], big["sha256"]) == (GB, body.digest.hexdigest())
        assert rss.growth < LIMIT_MB, f"RSS grew by {rss.growth:.1f} MB during a 1 GB upload"
    finally:
        srv.stop()
