"""Subprocess helpers shared by the tests that run daemons (TMS, pilots) for real."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, as an operator would; SIGKILL if it has not stopped within `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_terminal(fd: int, pattern: re.Pattern[str], timeout: float) -> tuple[re.Match[str], str]:
    """What the program wrote to its terminal, until `pattern` matches."""
    text, deadline = "", time.monotonic() + timeout
    while not (m := pattern.search(text)):
        left = deadline - time.monotonic()
        assert left > 0, f"nothing matching {pattern.pattern!r} on the terminal: {text!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                text += os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the program closed its terminal (it exited)
                raise AssertionError(f"the terminal closed; it showed {text!r}") from None
    return m, text
