"""The streaming multipart parser: any chunking gives the same parts; malformed bodies raise."""

from __future__ import annotations

import os

import pytest

from ewms_server.multipart import MultipartError, MultipartParser, PartEnd, PartStart, boundary_of

B = "----ewmsBoundary7MA4YWxk"


def body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{B}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return b"preamble\r\n" + out + f"--{B}--\r\n".encode()


def parse(raw: bytes, size: int) -> list[tuple[str, str | None, bytes]]:
    p = MultipartParser(B)
    out: list[tuple[str, str | None, bytes]] = []
    for i in range(0, len(raw), size):
        for ev in p.feed(raw[i : i + size]):
            if isinstance(ev, PartStart):
                out.append((ev.name, ev.filename, b""))
            elif isinstance(ev, bytes):
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + ev)
            else:
                assert isinstance(ev, PartEnd)
    p.close()
    return out


@pytest.mark.parametrize("size", [1, 3, 7, 64, 1 << 20])
def test_any_chunking_gives_the_same_parts(size: int) -> None:
    data = os.urandom(5000) + f"\r\n--{B[:-1]}".encode() + b"\r\n--"  # near-delimiters in data
    parts = [("file", "run.sh", b"echo hi\n"), ("n_cores", None, b"2"), ("file", "d/x.bin", data)]
    assert parse(body(*parts), size) == parts


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"no boundary at all" * 2000, "no boundary"),
        (f"--{B}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{B}--".encode(), "no name"),
        (f"--{B}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{B}--".encode(), "no Content-Disposition"),
        (f"--{B}\r\nbroken header\r\n\r\nx".encode(), "malformed part header"),
        (f"--{B}xx".encode(), "neither CRLF"),
    ],
)
def test_malformed_bodies_raise(raw: bytes, why: str) -> None:
    with pytest.raises(MultipartError, match=why):
        MultipartParser(B).feed(raw)


def test_a_body_cut_short_fails_on_close() -> None:
    p = MultipartParser(B)
    p.feed(body(("file", "a", b"x"))[:-10])
    with pytest.raises(MultipartError, match="closing boundary"):
        p.close()


def test_boundary_of() -> None:
    assert boundary_of(f'multipart/form-data; boundary="{B}"') == B
    for bad in (None, "application/json", "multipart/form-data"):
        with pytest.raises(MultipartError):
            boundary_of(bad)
