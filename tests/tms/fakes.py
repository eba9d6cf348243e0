"""Test doubles at the two boundaries only: the REST client and the htcondor2.Schedd object."""

from __future__ import annotations

import re
from typing import Any

import htcondor2


class RecordingClient:
    """Stands in for TmsClient: records every call, answers from queues set by the test."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pending_starter: list[dict[str, Any]] = []
        self.pending_stopper: list[dict[str, Any]] = []
        self.watched: list[dict[str, Any]] = []
        self.reject_submit: Exception | None = None

    def named(self, name: str) -> list[Any]:
        return [args for n, args in self.calls if n == name]

    async def get_pending_starter(self, schedd: str) -> dict[str, Any] | None:
        self.calls.append(("get_pending_starter", schedd))
        return self.pending_starter.pop(0) if self.pending_starter else None

    async def confirm_submit(self, uuid: str, body: dict[str, Any]) -> None:
        self.calls.append(("confirm_submit", (uuid, body)))
        if self.reject_submit:
            raise self.reject_submit

    async def fail_submit(self, uuid: str, error: str) -> None:
        self.calls.append(("fail_submit", (uuid, error)))

    async def get_pending_stopper(self, schedd: str) -> dict[str, Any] | None:
        self.calls.append(("get_pending_stopper", schedd))
        return self.pending_stopper.pop(0) if self.pending_stopper else None

    async def confirm_rm(self, uuid: str) -> None:
        self.calls.append(("confirm_rm", uuid))

    async def fail_rm(self, uuid: str, error: str) -> None:
        self.calls.append(("fail_rm", (uuid, error)))

    async def send_statuses(
        self,
        compound: dict,
        errors: dict,
        *,
        task_counts: dict | None = None,
        diagnosis: dict | None = None,
        machines: dict | None = None,
    ) -> None:
        self.calls.append(("send_statuses", (compound, errors)))
        self.calls.append(("send_statuses_extra", (task_counts, diagnosis)))
        self.calls.append(("send_statuses_machines", machines))

    async def confirm_complete(self, uuid: str, ts: int) -> None:
        self.calls.append(("confirm_complete", uuid))

    async def watched_taskforces(self, schedd: str) -> list[dict[str, Any]]:
        self.calls.append(("watched_taskforces", schedd))
        return self.watched


class FakeSchedd:
    """The htcondor2.Schedd surface the backend uses, over an in-memory queue (no daemon here)."""

    def __init__(self) -> None:
        self.next_cluster = 100
        self.jobs: dict[tuple[int, int], dict[str, Any]] = {}
        self.history_jobs: dict[tuple[int, int], dict[str, Any]] = {}
        self.submitted: list[htcondor2.Submit] = []
        self.actions: list[tuple[Any, str, str | None]] = []
        self.edits: list[tuple[str, str, str]] = []
        self.fail_next: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next:
            e, self.fail_next = self.fail_next, None
            raise e

    def submit(self, description: htcondor2.Submit, count: int = 1) -> Any:
        self._maybe_fail()
        assert isinstance(description, htcondor2.Submit)
        self.submitted.append(description)
        cluster = self.next_cluster
        self.next_cluster += 1
        attrs = {k[3:] if k.startswith("MY.") else k.lstrip("+"): v for k, v in description.items()}
        for proc in range(count):
            self.jobs[(cluster, proc)] = {"ClusterId": cluster, "ProcId": proc, "JobStatus": 1, **attrs}

        class Result:
            def cluster(self) -> int:
                return cluster

        return Result()

    @staticmethod
    def _match(constraint: str, ad: dict[str, Any]) -> bool:
        m = re.fullmatch(r'(\w+) == "(.*)"', constraint)
        if m:
            return ad.get(m.group(1)) == f'"{m.group(2)}"'
        # anything else: evaluated by HTCondor's own ClassAd engine over the job's attributes
        classad = htcondor2.classad.ClassAd()
        for k, v in ad.items():
            if isinstance(v, str):
                try:
                    classad[k] = htcondor2.classad.ExprTree(v)
                except Exception:  # not an expression (a bare path...): the text itself
                    classad[k] = v
            else:
                classad[k] = v
        return htcondor2.classad.ExprTree(constraint).eval(classad) is True

    def query(
        self, constraint: str = "True", projection: list[str] | None = None, limit: int = -1
    ) -> list[dict]:
        self._maybe_fail()
        return [ad for ad in self.jobs.values() if self._match(constraint, ad)][
            : None if limit < 0 else limit
        ]

    def history(
        self, constraint: str | None = None, projection: list[str] | None = None, match: int = -1
    ) -> list[dict]:
        self._maybe_fail()
        return [ad for ad in self.history_jobs.values() if self._match(constraint or "", ad)][
            : None if match < 0 else match
        ]

    def edit(self, job_spec: str, attr: str, value: str) -> None:
        self._maybe_fail()
        self.edits.append((job_spec, attr, value))
        cluster, _, proc = job_spec.partition(".")
        for k, ad in self.jobs.items():
            if k[0] == int(cluster) and (not proc or k[1] == int(proc)):
                ad[attr] = value

    def act(self, action: Any, job_spec: str, reason: str | None = None) -> dict:
        self._maybe_fail()
        self.actions.append((action, job_spec, reason))
        cluster, _, proc = job_spec.partition(".")
        keys = [k for k in self.jobs if k[0] == int(cluster) and (not proc or k[1] == int(proc))]
        if action == htcondor2.JobAction.Remove:
            for k in keys:
                self.history_jobs[k] = self.jobs.pop(k)
        return {"TotalSuccess": len(keys)}
