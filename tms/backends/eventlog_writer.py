"""Job event log records in HTCondor's own text format (parsed by ``htcondor2.JobEventLog``)."""

from __future__ import annotations

import fcntl
import os
import time

CHIRP_LINE_MAX = 1023  # HTCondor keeps only this many characters of a generic event's text

_USAGE2 = (
    "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage\n"
    "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Run Local Usage\n"
)
_USAGE4 = _USAGE2 + (
    "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Remote Usage\n"
    "\t\tUsr 0 00:00:00, Sys 0 00:00:00  -  Total Local Usage\n"
)
_BYTES2 = "\t0  -  Run Bytes Sent By Job\n\t0  -  Run Bytes Received By Job\n"
_BYTES4 = _BYTES2 + "\t0  -  Total Bytes Sent By Job\n\t0  -  Total Bytes Received By Job\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _head(code: int, cluster: int, proc: int, ts: float | None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if ts is None else ts))
    return f"{code:03d} ({cluster:03d}.{proc:03d}.000) {stamp} "


def submit(cluster: int, proc: int, host: str = "127.0.0.1", ts: float | None = None) -> str:
    return _head(0, cluster, proc, ts) + f"Job submitted from host: <{host}:9618?addrs={host}-9618>\n...\n"


def execute(
    cluster: int, proc: int, host: str = "127.0.0.1", ts: float | None = None, slot_name: str = ""
) -> str:
    """``slot_name``: ``slot<N>@<machine>``, the line HTCondor adds naming the slot and machine."""
    slot = f"\tSlotName: {_one_line(slot_name)}\n" if slot_name else ""
    return (
        _head(1, cluster, proc, ts) + f"Job executing on host: <{host}:9618?addrs={host}-9618>\n{slot}...\n"
    )


def evicted(cluster: int, proc: int, ts: float | None = None) -> str:
    return _head(4, cluster, proc, ts) + "Job was evicted.\n\t(0) CPU times\n" + _USAGE2 + _BYTES2 + "...\n"


def terminated(
    cluster: int, proc: int, *, exit_code: int | None = 0, signal: int | None = None, ts: float | None = None
) -> str:
    if signal is not None:
        how = f"\t(0) Abnormal termination (signal {signal})\n\t(0) No core file\n"
    else:
        how = f"\t(1) Normal termination (return value {exit_code})\n"
    return _head(5, cluster, proc, ts) + "Job terminated.\n" + how + _USAGE4 + _BYTES4 + "...\n"


def generic(cluster: int, proc: int, text: str, ts: float | None = None) -> str:
    return _head(8, cluster, proc, ts) + _one_line(text)[:CHIRP_LINE_MAX] + "\n...\n"


def aborted(cluster: int, proc: int, reason: str = "via condor_rm", ts: float | None = None) -> str:
    return _head(9, cluster, proc, ts) + f"Job was aborted.\n\t{_one_line(reason)}\n...\n"


def held(
    cluster: int, proc: int, reason: str, code: int = 0, subcode: int = 0, ts: float | None = None
) -> str:
    return (
        _head(12, cluster, proc, ts) + f"Job was held.\n\t{_one_line(reason)}\n"
        f"\tCode {code} Subcode {subcode}\n...\n"
    )


def released(cluster: int, proc: int, reason: str = "via condor_release", ts: float | None = None) -> str:
    return _head(13, cluster, proc, ts) + f"Job was released.\n\t{_one_line(reason)}\n...\n"


def cluster_removed(cluster: int, n_jobs: int, ts: float | None = None) -> str:
    return (
        _head(36, cluster, 0, ts) + f"Cluster removed\n\tMaterialized {n_jobs} jobs. Errors 0\n"
        "\tCompleted\n...\n"
    )


class EventLogWriter:
    """Appends whole events to one log; each event is one locked write, as HTCondor does."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)

    def write(self, record: str) -> None:
        data = record.encode()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            os.write(self._fd, data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
