"""The streamed zip: readable by zipfile and unzip, and as long as announced."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ewms_server.zipstream import zip_length, zip_stream


@pytest.mark.parametrize("n_files", [0, 1, 5])
async def test_zip_is_whole_and_its_length_known(n_files: int, tmp_path: Path) -> None:
    data = {f"d{i % 2}/f{i}.bin": os.urandom(i * 300_001) for i in range(n_files)}

    async def read(path: str) -> AsyncIterator[bytes]:
        blob = data[path]
        for i in range(0, len(blob), 1 << 20):
            yield blob[i : i + (1 << 20)]

    entries = [(p, len(b)) for p, b in data.items()]
    raw = b"".join([c async for c in zip_stream(entries, read)])
    assert await zip_length(entries) == len(raw)
    z = zipfile.ZipFile(io.BytesIO(raw))
    assert z.testzip() is None and {n: z.read(n) for n in z.namelist()} == data
    (tmp_path / "a.zip").write_bytes(raw)
    assert subprocess.run(["unzip", "-tq", str(tmp_path / "a.zip")], capture_output=True).returncode in (
        0,
        1 if not data else 0,
    )


async def test_zip64_sizes_have_no_announced_length() -> None:
    assert await zip_length([("big", 3 << 30)]) is None
