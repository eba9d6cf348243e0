"""The TMS side of ewms_server's REST API: typed calls, with backoff through outages."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import requests
from rest_tools.client import RestClient

if TYPE_CHECKING:
    from .metrics import TmsMetrics

LOGGER = logging.getLogger(__name__)

# statuses that mean "the server is not there right now": retry, never give up
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class ServerRejected(Exception):
    """The server answered a request with a non-transient error (4xx)."""

    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {text[:500]}")
        self.status = status


class AuthRejected(ServerRejected):
    """401/403: the token is bad, expired, or not a system-tms token for this schedd. Fatal:
    no retry can fix it."""


class Stopped(Exception):
    """Shutdown was requested while waiting for the server."""


class TmsClient:
    """Calls the /v1/tms endpoints; transient failures are retried with capped backoff."""

    def __init__(
        self,
        rc: RestClient,
        stop: asyncio.Event,
        *,
        backoff_min: float = 0.25,
        backoff_max: float = 60.0,
    ) -> None:
        self._rc = rc
        self._stop = stop
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self.outage_since: float | None = None
        self.metrics: TmsMetrics | None = None
        """Set by the app when metrics are served: submits and removals are counted here."""

    @classmethod
    def connect(
        cls, url: str, token: str, stop: asyncio.Event, *, timeout: float, backoff_max: float
    ) -> TmsClient:
        return cls(RestClient(url, token, timeout=timeout, retries=0), stop, backoff_max=backoff_max)

    def close(self) -> None:
        self._rc.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One call; waits out connection errors and 5xx until it succeeds or stop is set."""
        delay = self._backoff_min
        while True:
            try:
                result = await self._rc.request(method, path, body)
            except requests.exceptions.HTTPError as e:
                status = e.response.status_code if e.response is not None else 0
                if status not in _TRANSIENT_STATUS:
                    text = e.response.text if e.response is not None else ""
                    kind = AuthRejected if status in (401, 403) else ServerRejected
                    raise kind(method, path, status, text) from None
                reason = f"HTTP {status}"
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.RetryError,
            ) as e:  # RetryError: urllib3's answer to a 5xx
                reason = type(e).__name__
            else:
                if self.outage_since is not None:
                    LOGGER.warning("server is back after %.1fs", time.monotonic() - self.outage_since)
                    self.outage_since = None
                return result
            if self.outage_since is None:
                self.outage_since = time.monotonic()
            LOGGER.warning("server unavailable (%s) on %s %s; retrying in %.1fs", reason, method, path, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except TimeoutError:
                pass
            if self._stop.is_set():
                raise Stopped()
            delay = min(delay * 2, self._backoff_max)

    # --- endpoints -------------------------------------------------------------------------------

    async def check_token(self) -> None:
        """One cheap call only a system-tms token may make (an empty status report): raises
        AuthRejected at once for a bad or wrong-role token."""
        await self.send_statuses({}, {})

    async def get_pending_starter(self, schedd: str) -> dict[str, Any] | None:
        resp = await self.request("GET", "/v1/tms/pending-starter/taskforces", {"schedd": schedd})
        return resp or None

    async def confirm_submit(self, uuid: str, body: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.submits.inc()
        await self.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}", body)

    async def fail_submit(self, uuid: str, error: str) -> None:
        if self.metrics is not None:
            self.metrics.submit_failures.inc()
        await self.request("POST", f"/v1/tms/condor-submit/taskforces/{uuid}/failed", {"error": error})

    async def get_pending_stopper(self, schedd: str) -> dict[str, Any] | None:
        resp = await self.request("GET", "/v1/tms/pending-stopper/taskforces", {"schedd": schedd})
        return resp or None

    async def confirm_rm(self, uuid: str) -> None:
        if self.metrics is not None:
            self.metrics.removes.inc()
        await self.request("POST", f"/v1/tms/condor-rm/taskforces/{uuid}", {})

    async def fail_rm(self, uuid: str, error: str) -> None:
        if self.metrics is not None:
            self.metrics.remove_failures.inc()
        await self.request("POST", f"/v1/tms/condor-rm/taskforces/{uuid}/failed", {"error": error})

    async def send_statuses(
        self,
        compound_statuses: dict[str, dict[str, dict[str, int]]],
        top_task_errors: dict[str, dict[str, int]],
        *,
        task_counts: dict[str, dict[str, int]] | None = None,
        diagnosis: dict[str, dict[str, Any]] | None = None,
        machines: dict[str, dict[str, dict[str, int]]] | None = None,
    ) -> Any:
        body: dict[str, Any] = {
            "top_task_errors_by_taskforce": top_task_errors,
            "compound_statuses_by_taskforce": compound_statuses,
        }
        if task_counts:  # optional fields: EWMS's own server takes the first two only
            body["task_counts_by_taskforce"] = task_counts
        if diagnosis:
            body["diagnosis_by_taskforce"] = diagnosis
        if machines:
            body["machine_failures_by_taskforce"] = machines
        return await self.request("POST", "/v1/tms/statuses/taskforces", body)

    async def quarantine(self, schedd: str) -> list[dict[str, Any]]:
        """The quarantine entries in force at this schedd's locations."""
        resp = await self.request("GET", "/v1/tms/quarantine", {"schedd": schedd})
        return list(resp.get("machines", []))

    async def confirm_complete(self, uuid: str, ts: int) -> None:
        await self.request("POST", f"/v1/tms/condor-complete/taskforces/{uuid}", {"condor_complete_ts": ts})

    async def watched_taskforces(self, schedd: str) -> list[dict[str, Any]]:
        """Taskforces at this schedd whose clusters may still be in HTCondor."""
        query = {"schedd": schedd, "phase": {"$in": ["condor-submit", "pending-stopper", "condor-rm"]}}
        projection = [
            "taskforce_uuid",
            "cluster_id",
            "n_workers",
            "job_event_log_fpath",
            "phase",
            "submit_dict",
        ]
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            body: dict[str, Any] = {"query": query, "projection": projection}
            if after:
                body["after"] = after
            resp = await self.request("POST", "/v1/query/taskforces", body)
            found.extend(resp.get("taskforces", []))
            after = resp.get("next_after")
            if not after:
                return found
