"""Secrets for the person who started the server: shown on its terminal, kept in a 0600 file,
never written into a log (stdout or stderr redirected to a file is a log)."""

from __future__ import annotations

import os
import sys
from typing import TextIO


def terminal() -> TextIO | None:
    """stdout if it is a terminal, else stderr if it is; None when both go elsewhere."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                return stream
        except (AttributeError, ValueError):  # replaced or closed
            continue
    return None


def write_private(path: str, text: str) -> None:
    """`text` into `path`, readable by this user only, whole or not at all."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def show_secrets(text: str, path: str, *, what: str) -> None:
    """`text` into `path` (0600) and onto the terminal; with no terminal, stderr names the
    file instead."""
    write_private(path, text)
    out = terminal()
    if out is not None:
        print(text, end="" if text.endswith("\n") else "\n", file=out, flush=True)
    else:
        print(
            f"{what}: in {path} (readable by you only; not printed here, since neither stdout "
            "nor stderr is a terminal)",
            file=sys.stderr,
            flush=True,
        )
