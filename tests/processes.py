"""Subprocess helpers shared by the tests that run daemons (TMS, pilots) for real."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import threading
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


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid` (VmRSS), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PeakRSS:
    """`with PeakRSS(pid) as p:` samples the process's RSS every 20 ms in a thread;
    `p.growth` is the peak during the block minus the RSS before it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rest = self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self.rest = self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.rest


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
