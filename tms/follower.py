"""Follows one job event log with ``htcondor2.JobEventLog``: batches, corrupt events, rotation.

Blocking (file I/O and parsing): call ``pump`` off the event loop.
"""

from __future__ import annotations

import logging
import os
import time

import htcondor2

from .jobstate import EXECUTE, GENERIC, HELD, ClusterState, machine_of

LOGGER = logging.getLogger(__name__)

_SEPARATOR = b"...\n"
_PEEK = 1 << 20  # bytes read past a stuck offset when looking for the end of a corrupt event


def _reader_at(path: str, offset: int) -> htcondor2.JobEventLog:
    """A reader positioned at byte ``offset`` (through JobEventLog's pickle protocol)."""
    jel = htcondor2.JobEventLog.__new__(htcondor2.JobEventLog)
    jel.__setstate__(({"_deadline": 0, "_filename": path}, offset))
    return jel


def _offset(jel: htcondor2.JobEventLog) -> int:
    return int(jel.__getstate__()[1])


def _end_of_event(path: str, offset: int) -> int | None:
    """Offset just past the next complete event at or after ``offset``; None if none is complete."""
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read(_PEEK)
    if chunk.startswith(_SEPARATOR):
        return offset + len(_SEPARATOR)
    at = chunk.find(b"\n" + _SEPARATOR)
    return None if at < 0 else offset + at + 1 + len(_SEPARATOR)


class LogFollower:
    """Reads new events of one log into the ``ClusterState`` of each watched cluster."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.n_events = 0
        self.n_corrupt = 0
        self._jel: htcondor2.JobEventLog | None = None
        self._ino = 0
        self.caught_up_at = time.monotonic()
        """When a pump last found nothing more to read."""

    def close(self) -> None:
        if self._jel is not None:
            self._jel.close()
            self._jel = None

    def _check_file(self) -> bool:
        """Once per pass: open the log when it appears, reopen it when it was rotated."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._jel is not None  # keep reading what is already open
        if self._jel is not None and (st.st_ino != self._ino or st.st_size < _offset(self._jel)):
            LOGGER.warning("job event log %s was rotated or truncated: reading it from the top", self.path)
            self.close()
        if self._jel is None:
            self._jel = htcondor2.JobEventLog(self.path)
            self._ino = st.st_ino
        return True

    def pump(self, clusters: dict[int, ClusterState], max_events: int = 50_000) -> int:
        """Apply up to ``max_events`` new events; returns how many were read (0: caught up)."""
        if not self._check_file():
            return 0
        n = self._read(clusters, max_events)
        if n == 0:
            n = self._unstick(clusters, max_events)
        if n == 0:
            self.caught_up_at = time.monotonic()
        self.n_events += n
        return n

    def lag(self) -> tuple[int, float]:
        """(bytes of the log not read yet, seconds since this follower was last at its end)."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return 0, 0.0
        behind = max(0, size - (_offset(self._jel) if self._jel is not None else 0))
        return behind, (time.monotonic() - self.caught_up_at) if behind else 0.0

    def _read(self, clusters: dict[int, ClusterState], max_events: int) -> int:
        assert self._jel is not None
        n = 0
        events = self._jel.events(0)
        while n < max_events:
            try:
                for ev in events:
                    n += 1
                    cs = clusters.get(ev.cluster)
                    if cs is not None:
                        etype = ev.type
                        if etype == GENERIC:
                            cs.apply(GENERIC, ev.proc, ev.get("Info"))
                        elif etype == HELD:
                            cs.apply(
                                HELD,
                                ev.proc,
                                hold_reason=ev.get("HoldReason"),
                                ts=ev.timestamp,
                                hold_code=ev.get("HoldReasonCode"),
                                hold_subcode=ev.get("HoldReasonSubCode"),
                            )
                        elif etype == EXECUTE:
                            machine = machine_of(ev.get("SlotName"), ev.get("ExecuteHost"))
                            cs.apply(EXECUTE, ev.proc, machine=machine)
                        else:
                            cs.apply(etype, ev.proc)
                    if n >= max_events:
                        break
                else:
                    break  # caught up
            except (htcondor2.HTCondorException, ValueError, KeyError) as e:
                # a corrupt event (the reader has moved past it) or an unknown event type
                self.n_corrupt += 1
                LOGGER.warning("skipping a corrupt event in %s: %r", self.path, e)
        return n

    def _unstick(self, clusters: dict[int, ClusterState], max_events: int) -> int:
        """The reader stops silently at garbage; once a complete event follows, get past it."""
        assert self._jel is not None
        stuck_at = _offset(self._jel)
        for _ in range(16):
            offset = _offset(self._jel)
            end = _end_of_event(self.path, offset)
            if end is None:
                return 0  # at the end, or an event is still being written
            n = self._read(clusters, max_events)
            if n:
                return n
            if _offset(self._jel) == offset:  # no progress at all: step past it ourselves
                self._jel.close()
                self._jel = _reader_at(self.path, end)
        self.n_corrupt += 1
        LOGGER.warning("skipping unreadable bytes from offset %d of %s", stuck_at, self.path)
        return 0
