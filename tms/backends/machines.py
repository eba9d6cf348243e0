"""The local backend's simulated machines: named slots its jobs are placed on, machines that
fail every task (``broken``, a black-hole node), and machines the server quarantined (skipped,
and their pilots sent away).

The slot table is one JSON file in the backend's state dir, changed under a lock by every
cluster's supervisor, so all clusters of a TMS share the machines' slots as HTCondor jobs share
a pool's. The quarantine list is a file the TMS writes and the supervisors read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import Iterable
from typing import Any

from . import local_users

MACHINE_ENV = "EWMS_MACHINE"
"""The job's machine name in its environment (HTCondor's machine ad has it as ``Machine``)."""
_MAX_FAIL_AFTER_S = 3600.0
ANY_MACHINE = "*"
"""A quarantine entry naming every machine of a location (the whole location is paused)."""
NO_FREE_SLOT = "no free slot"
QUARANTINED = "machine quarantined"

_SLOTS_FILE = "slots.json"
_QUARANTINE_FILE = "quarantine.json"
_MAX_SLOTS = 4096


@dataclasses.dataclass(frozen=True)
class Machine:
    name: str
    slots: int
    broken: bool = False
    fail_after_s: float = 0.0
    """On a broken machine: seconds each task runs before it fails (0: at once)."""

    def broken_task(self) -> tuple[str, str]:
        """(EWMS_PILOT_TASK_IMAGE, EWMS_PILOT_TASK_ARGS) of every job on a broken machine:
        each task the pilot runs there exits non-zero, as on a black-hole node."""
        if not self.fail_after_s:
            return "/bin/false", ""
        return "/bin/sh", f"-c 'sleep {self.fail_after_s:g}; exit 1'"


def default_machines() -> tuple[Machine, ...]:
    """One machine named after this host, with a slot per CPU."""
    return (Machine(socket.gethostname() or "localhost", os.cpu_count() or 1),)


def parse_machines(value: str) -> tuple[Machine, ...]:
    """``{"m1": {"slots": 4}, "m2": {"slots": 4, "broken": true}}`` -> machines (ValueError)."""
    try:
        raw = json.loads(value)
    except ValueError:
        raise ValueError(f"not JSON: {value[:80]!r}") from None
    if not isinstance(raw, dict) or not raw:
        raise ValueError('expected a JSON object of machines, e.g. {"m1": {"slots": 4}}')
    out = []
    for name, conf in raw.items():
        if not name or name == ANY_MACHINE or not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"machine name {name[:40]!r}: letters, digits, '-', '_' and '.' only")
        if not isinstance(conf, dict) or set(conf) - {"slots", "broken", "fail_after_s"}:
            raise ValueError(
                f"machine {name}: expected {{'slots': N, 'broken': true|false, 'fail_after_s': S}}"
            )
        slots, broken, after = conf.get("slots"), conf.get("broken", False), conf.get("fail_after_s", 0)
        if type(slots) is not int or not 1 <= slots <= _MAX_SLOTS:
            raise ValueError(f"machine {name}: slots must be a whole number 1-{_MAX_SLOTS}")
        if type(broken) is not bool:
            raise ValueError(f"machine {name}: broken must be true or false")
        if type(after) not in (int, float) or not 0 <= after <= _MAX_FAIL_AFTER_S:
            raise ValueError(f"machine {name}: fail_after_s must be 0-{_MAX_FAIL_AFTER_S:g} seconds")
        out.append(Machine(name, slots, broken, float(after)))
    return tuple(out)


def machines_json(machines: Iterable[Machine]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(m) for m in machines]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SlotTable:
    """Which job holds which slot of which machine; one file, changed under a lock."""

    def __init__(self, state_dir: str, machines: Iterable[Machine]) -> None:
        self.state_dir = state_dir
        self.machines = {m.name: m for m in machines}
        self._path = os.path.join(state_dir, _SLOTS_FILE)
        self._lock = os.path.join(state_dir, "slots.lock")

    def _load(self) -> dict[str, dict[str, list[Any]]]:
        try:
            with open(self._path) as f:
                busy = json.load(f)
        except (OSError, ValueError):
            busy = {}
        # {machine: {slot: [job, supervisor pid]}}; a dead supervisor's slots are free
        return {
            m: {s: held for s, held in slots.items() if pid_alive(int(held[1]))}
            for m, slots in busy.items()
            if isinstance(slots, dict)
        }

    def _save(self, busy: dict[str, dict[str, list[Any]]]) -> None:
        tmp = f"{self._path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(busy, f)
        os.replace(tmp, self._path)

    def acquire(self, job: str, pid: int, quarantined: set[str]) -> tuple[str, int] | str:
        """A free slot (machine, slot number) for ``job`` on a machine not quarantined, the
        machine with the most free slots first; else why none (NO_FREE_SLOT / QUARANTINED)."""
        with local_users.locked(self._lock):
            busy = self._load()
            usable = [m for m in self.machines.values() if m.name not in quarantined]
            if ANY_MACHINE in quarantined or not usable:
                return QUARANTINED
            free = {
                m.name: [s for s in range(1, m.slots + 1) if str(s) not in busy.get(m.name, {})]
                for m in usable
            }
            name = max(free, key=lambda n: (len(free[n]), -list(self.machines).index(n)))
            if not free[name]:
                return NO_FREE_SLOT
            slot = free[name][0]
            busy.setdefault(name, {})[str(slot)] = [job, pid]
            self._save(busy)
            return name, slot

    def release(self, job: str) -> None:
        with local_users.locked(self._lock):
            busy = self._load()
            for slots in busy.values():
                for s in [s for s, held in slots.items() if held[0] == job]:
                    del slots[s]
            self._save(busy)

    def busy(self) -> dict[str, int]:
        """Slots in use per machine."""
        with local_users.locked(self._lock):
            return {m: len(s) for m, s in self._load().items()}


def write_quarantine(state_dir: str, machines: Iterable[str]) -> None:
    """The machines jobs must leave and not be placed on (``*``: all of them)."""
    path = os.path.join(state_dir, _QUARANTINE_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(sorted(set(machines)), f)
    os.replace(tmp, path)


def read_quarantine(state_dir: str) -> set[str]:
    with (
        contextlib.suppress(OSError, ValueError, TypeError),
        open(os.path.join(state_dir, _QUARANTINE_FILE)) as f,
    ):
        return {str(m) for m in json.load(f)}
    return set()
