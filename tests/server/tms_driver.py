"""Clients for the crash and replica tests: workflow posters and a TMS driven by hand, each a
thread that keeps a record of what the server acknowledged (a 200) and what it only sent.

A request that got no answer (the server was killed under it) is retried until it gets one,
as a TMS does; a claim that got no answer is not retried: its lease must run out first."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import workflow_body

from .server_process import Api, NoAnswer, token

_CLUSTERS = itertools.count(1000)


class Stopped(Exception):
    """The actor was stopped while it waited for an answer."""


class Actor(threading.Thread):
    """A thread with a stop event; an exception in it is kept for the test to raise."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.act()
        except Stopped:
            pass
        except BaseException as e:  # surfaced by check()
            self.error = e

    def act(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error

    def answered(self, api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Retry through outages until the server answers (or the actor is stopped)."""
        while True:
            try:
                return api.call(method, path, body)
            except NoAnswer:
                if self.stopping.wait(0.05):
                    raise Stopped() from None


class Poster(Actor):
    """POSTs workflows at `location` (every `every` s, at most `limit`); aborts every
    `abort_every`-th acknowledged one."""

    def __init__(
        self,
        name: str,
        ports: Callable[[], int],
        location: str,
        *,
        every: float = 0.0,
        limit: int = 10**9,
        abort_every: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        self.ports, self.location, self.every, self.limit = ports, location, every, limit
        self.abort_every, self.env = abort_every, env
        self.acked: dict[str, dict[str, Any]] = {}
        self.aborted: list[str] = []
        self.no_answer = 0

    def body(self) -> dict[str, Any]:
        body = workflow_body(locations=(self.location,))
        body["tasks"][0]["n_workers"] = 1
        if self.env:
            body["tasks"][0]["pilot_config"] = {"environment": dict(self.env)}
        return body

    def act(self) -> None:
        api = Api(self.ports(), token("user", "alice"))
        try:
            while not self.stopping.is_set() and len(self.acked) < self.limit:
                api.port = self.ports()
                try:
                    status, got = api.call("POST", "/v1/workflows", self.body())
                except NoAnswer:
                    self.no_answer += 1
                    self.stopping.wait(0.05)
                    continue
                assert status == 200, got
                wid = got["workflow"]["workflow_id"]
                self.acked[wid] = got
                if self.abort_every and len(self.acked) % self.abort_every == 0:
                    status, got = self.answered(api, "POST", f"/v1/workflows/{wid}/actions/abort")
                    assert status == 200, got
                    self.aborted.append(wid)
                if self.every:
                    self.stopping.wait(self.every)
        finally:
            api.close()


@dataclass
class Offer:
    uuid: str
    sent: float
    received: float
    by: str


@dataclass
class Ledger:
    """What every hand-driven TMS was offered and what the server acknowledged, shared."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    offers: list[Offer] = field(default_factory=list)
    submitted: dict[str, int] = field(default_factory=dict)
    """uuid -> the cluster whose condor-submit got a 200."""
    refused_submits: list[tuple[str, int]] = field(default_factory=list)
    second_submits: list[tuple[str, int]] = field(default_factory=list)
    """(uuid, status) of a submit with another cluster after the first was acknowledged."""
    statuses_acked: dict[str, int] = field(default_factory=dict)
    statuses_sent: dict[str, int] = field(default_factory=dict)
    completed: set[str] = field(default_factory=set)


class HandTms(Actor):
    """A TMS for `schedd`, by hand: claim, submit, then try a second cluster (must be
    refused), report statuses, and report every other taskforce complete."""

    def __init__(self, name: str, ports: Callable[[], int], schedd: str, ledger: Ledger) -> None:
        super().__init__(name)
        self.ports, self.schedd, self.ledger = ports, schedd, ledger
        self.n_handled = 0

    def act(self) -> None:
        api = Api(self.ports(), token("system-tms", self.name, [self.schedd]))
        try:
            while not self.stopping.is_set():
                api.port = self.ports()
                sent = time.time()
                try:
                    status, got = api.call("GET", f"/v1/tms/pending-starter/taskforces?schedd={self.schedd}")
                except NoAnswer:  # the claim may have landed: its lease runs, nobody else gets it
                    self.stopping.wait(0.05)
                    continue
                assert status == 200, got
                if not got:
                    self.stopping.wait(0.05)
                    continue
                uuid = got["taskforce"]["taskforce_uuid"]
                with self.ledger.lock:
                    self.ledger.offers.append(Offer(uuid, sent, time.time(), self.name))
                self.handle(api, uuid)
        finally:
            api.close()

    def handle(self, api: Api, uuid: str) -> None:
        cluster = next(_CLUSTERS)
        body = {
            "cluster_id": cluster,
            "n_workers": 1,
            "submit_dict": {"queue": 1},
            "job_event_log_fpath": "/x.log",
        }
        status, got = self.answered(api, "POST", f"/v1/tms/condor-submit/taskforces/{uuid}", body)
        with self.ledger.lock:
            if status != 200:  # another TMS got it after our lease ran out, and submitted first
                assert status == 404, got
                self.ledger.refused_submits.append((uuid, cluster))
                return
            self.ledger.submitted[uuid] = cluster
        other = {**body, "cluster_id": next(_CLUSTERS)}
        status, _ = self.answered(api, "POST", f"/v1/tms/condor-submit/taskforces/{uuid}", other)
        with self.ledger.lock:
            self.ledger.second_submits.append((uuid, status))
        for k in (1, 2):
            with self.ledger.lock:
                self.ledger.statuses_sent[uuid] = k
            report = {
                "compound_statuses_by_taskforce": {uuid: {"RUNNING": {"Tasking": k}}},
                "top_task_errors_by_taskforce": {},
            }
            status, got = self.answered(api, "POST", "/v1/tms/statuses/taskforces", report)
            assert status == 200, got
            with self.ledger.lock:
                self.ledger.statuses_acked[uuid] = k
        self.n_handled += 1
        if self.n_handled % 2:
            done = {"condor_complete_ts": int(time.time())}
            status, got = self.answered(api, "POST", f"/v1/tms/condor-complete/taskforces/{uuid}", done)
            assert status == 200, got
            with self.ledger.lock:
                self.ledger.completed.add(uuid)


def offered_twice_within_lease(offers: list[Offer], lease_s: float) -> list[tuple[Offer, Offer]]:
    """Pairs of offers of one taskforce where the second came before the first's lease could
    have run out: the server set lease_until = now + lease with `now` no earlier than the
    first request was sent, and offered it again at a `now` no later than the second answer."""
    by: dict[str, list[Offer]] = {}
    for o in sorted(offers, key=lambda o: o.sent):
        by.setdefault(o.uuid, []).append(o)
    return [
        (a, b) for os_ in by.values() for a, b in itertools.pairwise(os_) if b.received < a.sent + lease_s
    ]
