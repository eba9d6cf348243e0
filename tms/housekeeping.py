"""Housekeeping: compress, then delete, old per-taskforce directories no live taskforce uses."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import os
import shutil
import time

from .submit import AUTH_FILE_NAME, EVENT_LOG_NAME
from .tracking import Registry

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HousekeepingDeps:
    registry: Registry
    root: str
    compress_after: float
    delete_after: float
    interval: float


def _newest_mtime(path: str) -> float:
    """Files only: compressing a log touches the directory, not the age of what is in it."""
    times = [e.stat(follow_symlinks=False).st_mtime for e in os.scandir(path)]
    return max(times) if times else os.stat(path).st_mtime


def sweep(
    root: str,
    live_uuids: set[str],
    live_paths: set[str],
    compress_after: float,
    delete_after: float,
    now: float | None = None,
) -> dict[str, list[str]]:
    """One pass (blocking). Returns what was compressed and deleted."""
    now = time.time() if now is None else now
    done: dict[str, list[str]] = {"compressed": [], "deleted": []}
    live_dirs = {os.path.dirname(p) for p in live_paths}
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return done
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name in live_uuids or entry.path in live_dirs:
            continue
        age = now - _newest_mtime(entry.path)
        if age >= delete_after:
            shutil.rmtree(entry.path, ignore_errors=True)
            done["deleted"].append(entry.name)
        elif age >= compress_after:
            log = os.path.join(entry.path, EVENT_LOG_NAME)
            if os.path.exists(log):
                stamp = os.stat(log).st_mtime
                with open(log, "rb") as src, gzip.open(log + ".gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.utime(log + ".gz", (stamp, stamp))  # keep its age: deletion counts from the last event
                os.unlink(log)
                done["compressed"].append(entry.name)
            auth = os.path.join(entry.path, AUTH_FILE_NAME)
            if os.path.exists(auth):
                os.unlink(auth)  # the queue credentials outlive no cluster
    return done


async def sweep_once(deps: HousekeepingDeps) -> bool:
    """Only once the registry knows every live taskforce (the tracker's first pass)."""
    if deps.registry.restored:
        done = await asyncio.to_thread(
            sweep,
            deps.root,
            set(deps.registry.by_uuid),
            deps.registry.live_paths(),
            deps.compress_after,
            deps.delete_after,
        )
        if done["compressed"] or done["deleted"]:
            LOGGER.info("housekeeping: %s", done)
    return False


def next_wait(deps: HousekeepingDeps) -> float:
    return deps.interval if deps.registry.restored else min(5.0, deps.interval)
