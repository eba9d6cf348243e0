"""HTCondorBackend: clusters in a real schedd through the htcondor2 bindings."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import htcondor2

from ..submit import TASKFORCE_ATTR
from .base import BackendError, ClusterSpec, IdleReport

LOGGER = logging.getLogger(__name__)


def locate_schedd(name: str) -> Any:
    """The local schedd when ``name`` is this host, else the one the collector knows by ``name``."""
    if name in (socket.gethostname(), socket.getfqdn(), ""):
        return htcondor2.Schedd()
    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, name)
    return htcondor2.Schedd(ad)


class HTCondorBackend:
    """All schedd calls are blocking: each goes through ``_call`` (one ``to_thread`` site)."""

    name = "htcondor"

    def __init__(self, schedd_name: str, schedd_factory: Callable[[str], Any] = locate_schedd) -> None:
        self._schedd_name = schedd_name
        self._factory = schedd_factory
        self._schedd: Any = None

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            if self._schedd is None:
                self._schedd = self._factory(self._schedd_name)
            try:
                return getattr(self._schedd, method)(*args, **kwargs)
            except Exception:
                self._schedd = None  # re-locate next time (schedd restarted, moved...)
                raise

        try:
            return await asyncio.to_thread(call)
        except htcondor2.HTCondorException as e:
            raise BackendError(f"schedd {self._schedd_name}: {method} failed: {e}") from e
        except (RuntimeError, OSError, ValueError) as e:
            raise BackendError(f"schedd {self._schedd_name}: {method} failed: {e!r}") from e

    async def submit(self, spec: ClusterSpec) -> int:
        description = htcondor2.Submit(spec.submit_dict)
        result = await self._call("submit", description, count=spec.n_workers)
        return int(result.cluster())

    async def find_cluster(self, taskforce_uuid: str) -> int | None:
        constraint = f'{TASKFORCE_ATTR} == "{taskforce_uuid}"'
        for method, kwargs in (("query", {"limit": 1}), ("history", {"match": 1})):
            ads = await self._call(method, constraint=constraint, projection=["ClusterId"], **kwargs)
            for ad in ads:
                return int(ad["ClusterId"])
        return None

    async def remove(self, cluster_id: int, reason: str, proc: int | None = None) -> None:
        spec = str(cluster_id) if proc is None else f"{cluster_id}.{proc}"
        await self._call("act", htcondor2.JobAction.Remove, spec, reason=reason)

    async def release(self, cluster_id: int, proc: int) -> None:
        await self._call(
            "act", htcondor2.JobAction.Release, f"{cluster_id}.{proc}", reason="EWMS hold policy"
        )

    async def resubmit(self, cluster_id: int, proc: int, memory_bytes: int) -> None:
        """The job again, with more memory: its RequestMemory (MiB) edited, then released."""
        job = f"{cluster_id}.{proc}"
        await self._call("edit", job, "RequestMemory", str(max(1, -(-memory_bytes >> 20))))
        await self._call("act", htcondor2.JobAction.Release, job, reason="EWMS hold policy: more memory")

    async def set_quarantine(self, machines: set[str]) -> None:
        """Running EWMS jobs on a quarantined machine get a requirements clause excluding it,
        then are vacated (their pilots get SIGTERM, return their tasks, and the job goes back
        to idle to match elsewhere). New submits carry the clause from the starter."""
        from ..jobstate import machine_of
        from ..submit import exclusion_clause

        if not machines or "*" in machines:
            return  # a paused location: the server offers it no new taskforce; jobs run out
        ads = await self._call(
            "query",
            constraint=f"JobStatus == 2 && {TASKFORCE_ATTR} =!= undefined",
            projection=["ClusterId", "ProcId", "RemoteHost", "Requirements"],
        )
        for ad in ads:
            machine = machine_of(str(ad.get("RemoteHost") or ""), None)
            if machine not in machines:
                continue
            job = f"{int(ad['ClusterId'])}.{int(ad['ProcId'])}"
            reqs = exclusion_clause(str(ad.get("Requirements") or ""), [machine])
            await self._call("edit", job, "Requirements", reqs)
            await self._call(
                "act", htcondor2.JobAction.Vacate, job, reason=f"EWMS: machine {machine} quarantined"
            )

    async def explain_idle(self, idle: dict[int, list[int]], n_running: int) -> dict[int, IdleReport]:
        """One query for every idle EWMS job at the schedd: what its ad says about matching."""
        from ..diagnosis import UNREACHABLE, idle_reason

        if not idle:
            return {}
        try:
            ads = await self._call(
                "query",
                constraint=f"JobStatus == 1 && {TASKFORCE_ATTR} =!= undefined",
                projection=["ClusterId", "ProcId", "NumJobMatches", "LastRejMatchReason"],
            )
        except BackendError as e:
            return {c: IdleReport({UNREACHABLE: len(procs)}, error=str(e)) for c, procs in idle.items()}
        reasons: dict[int, Counter[str]] = {c: Counter() for c in idle}
        matched: dict[int, list[int]] = {c: [0, 0] for c in idle}
        wanted = {c: set(procs) for c, procs in idle.items()}
        for ad in ads:
            cluster, proc = int(ad["ClusterId"]), int(ad["ProcId"])
            if proc not in wanted.get(cluster, ()):
                continue  # another cluster's, or one the event log already shows started
            n_matches = int(ad.get("NumJobMatches") or 0)
            reasons[cluster][idle_reason(ad.get("LastRejMatchReason"), n_matches)] += 1
            matched[cluster][0 if n_matches > 0 else 1] += 1
        return {c: IdleReport(dict(reasons[c]), matches=(matched[c][0], matched[c][1])) for c in idle}

    async def poll(self) -> None:
        return None  # the schedd keeps its own jobs

    async def close(self) -> None:
        self._schedd = None
