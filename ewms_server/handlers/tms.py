"""Routes under /v1/tms: for the Taskforce Management Service (role system-tms, or admin).

A TMS acts only for the schedds its token names: asking for another schedd's work, or
reporting on another schedd's taskforce, is a 403 decided before the body is read (a taskforce
that does not exist is left to the route: 404). The bulk statuses report answers per taskforce.
"""

from __future__ import annotations

from ..auth import TMSCaller
from ..ops import task_counts
from ..ops import taskforces as ops
from .base import TMS, BaseHandler

REPORT_FIELDS = (
    "compound_statuses_by_taskforce",
    "top_task_errors_by_taskforce",
    "task_counts_by_taskforce",
    "diagnosis_by_taskforce",
)


class _ScheddHandler(BaseHandler):
    """A route naming its schedd in the query: only that schedd's TMS (or an admin) may ask."""

    async def authorize(self) -> None:
        schedd = self.query["schedd"]
        self.require_schedd(schedd, f"this token does not act for schedd {schedd!r}")


class _TaskforceReportHandler(BaseHandler):
    """A report about one taskforce: only from the TMS of the taskforce's schedd (or an admin)."""

    async def authorize(self) -> None:
        uuid = self.path_kwargs["taskforce_uuid"]
        tf = await self.deps.store.get("taskforces", {"taskforce_uuid": uuid}, projection=["schedd"])
        if tf is not None:
            self.require_schedd(tf["schedd"], f"taskforce {uuid} is not at a schedd this token acts for")


class TMSPendingStarterHandler(_ScheddHandler):
    ROUTE = r"/v1/tms/pending-starter/taskforces"
    OPENAPI_PATH = "/v1/tms/pending-starter/taskforces"
    ROLES = {"GET": TMS}

    async def get(self) -> None:
        found = await ops.next_pending_starter(
            self.deps.store, self.query["schedd"], self.deps.cfg.starter_lease_s, self.deps.fair_share
        )
        answer = self.deps.views.pending_starter(found)
        if (answer.get("task_directive") or {}).get("secrets"):  # the pilots fetch their values
            box = self.deps.secrets_box
            uuid = answer["taskforce"]["taskforce_uuid"]
            answer["secrets_fetch_token"] = box.fetch_token(uuid) if box is not None else None
        self.send(answer)


class TMSPendingStopperHandler(_ScheddHandler):
    ROUTE = r"/v1/tms/pending-stopper/taskforces"
    OPENAPI_PATH = "/v1/tms/pending-stopper/taskforces"
    ROLES = {"GET": TMS}

    async def get(self) -> None:
        found = await ops.next_pending_stopper(
            self.deps.store, self.query["schedd"], self.deps.cfg.starter_lease_s
        )
        self.send(self.deps.views.taskforce(found) if found else {})


class TMSCondorSubmitUUIDHandler(_TaskforceReportHandler):
    ROUTE = r"/v1/tms/condor-submit/taskforces/(?P<taskforce_uuid>[^/]+)"
    OPENAPI_PATH = "/v1/tms/condor-submit/taskforces/{taskforce_uuid}"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        await ops.condor_submit(self.deps.store, taskforce_uuid, self.body(), self.caller)
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorSubmitUUIDFailedHandler(_TaskforceReportHandler):
    ROUTE = r"/v1/tms/condor-submit/taskforces/(?P<taskforce_uuid>[^/]+)/failed"
    OPENAPI_PATH = "/v1/tms/condor-submit/taskforces/{taskforce_uuid}/failed"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        cfg = self.deps.cfg
        error = self.body().get("error", "(no error given)")
        n = await ops.condor_submit_failed(
            self.deps.store,
            taskforce_uuid,
            error,
            self.caller,
            cfg.max_submit_attempts,
            cfg.submit_retry_delay_s,
        )
        if n >= cfg.max_submit_attempts and self.deps.notifier is not None:
            await self.deps.notifier.submit_failed(taskforce_uuid, n, error)
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorRmUUIDHandler(_TaskforceReportHandler):
    ROUTE = r"/v1/tms/condor-rm/taskforces/(?P<taskforce_uuid>[^/]+)"
    OPENAPI_PATH = "/v1/tms/condor-rm/taskforces/{taskforce_uuid}"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        self.body()
        await ops.condor_rm(self.deps.store, taskforce_uuid, self.caller)
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorRmUUIDFailedHandler(_TaskforceReportHandler):
    ROUTE = r"/v1/tms/condor-rm/taskforces/(?P<taskforce_uuid>[^/]+)/failed"
    OPENAPI_PATH = "/v1/tms/condor-rm/taskforces/{taskforce_uuid}/failed"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        await ops.condor_rm_failed(
            self.deps.store,
            taskforce_uuid,
            self.body().get("error", "(no error given)"),
            self.caller,
            self.deps.cfg.submit_retry_delay_s,
        )
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorCompleteUUIDHandler(_TaskforceReportHandler):
    ROUTE = r"/v1/tms/condor-complete/taskforces/(?P<taskforce_uuid>[^/]+)"
    OPENAPI_PATH = "/v1/tms/condor-complete/taskforces/{taskforce_uuid}"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        body = self.body()
        await ops.condor_complete(self.deps.store, taskforce_uuid, body["condor_complete_ts"], self.caller)
        self.deps.wake("mq_activation")  # the workflow's credentials may now be revoked
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSStatusesTaskforcesHandler(BaseHandler):
    ROUTE = r"/v1/tms/statuses/taskforces"
    OPENAPI_PATH = "/v1/tms/statuses/taskforces"
    ROLES = {"POST": TMS}
    MAX_BODY_SETTING = "max_statuses_body_bytes"  # a watcher's bulk report runs to megabytes

    async def post(self) -> None:
        body, cfg = self.body(), self.deps.cfg
        uuids = list(dict.fromkeys(u for field in REPORT_FIELDS for u in body.get(field, {})))
        refused = await self._elsewhere(uuids)
        if refused:
            body = {k: {u: v for u, v in part.items() if u not in refused} for k, part in body.items()}
        prior = await task_counts.before(self.deps.store, body)
        by_uuid = {r["uuid"]: r for r in await ops.update_statuses(self.deps.store, body)}
        await task_counts.after(
            self.deps.store,
            body,
            prior,
            on_delta=self.deps.metrics.add_tasks if self.deps.metrics else None,
            min_interval_s=cfg.progress_sample_s,
            max_len=cfg.progress_history_len,
        )
        self.deps.wake("autoscale")  # workers started or ended: the autoscaler's figures moved
        if self.deps.notifier is not None:
            await self.deps.notifier.statuses_reported(body.get("compound_statuses_by_taskforce", {}))
        for uuid in refused:
            by_uuid[uuid] = {"uuid": uuid, "status": "failed", "error": "not at a schedd this token acts for"}
        results = [by_uuid[u] for u in uuids]
        failed = any(r["status"] != "updated" for r in results)
        self.send({"results": results}, 207 if failed else 200)

    async def _elsewhere(self, uuids: list[str]) -> set[str]:
        """The taskforces among `uuids` at schedds this TMS does not act for."""
        caller = self.caller
        if not isinstance(caller, TMSCaller) or caller.schedds is None or not uuids:
            return set()  # an admin, or a legacy unscoped token
        refused: set[str] = set()
        for i in range(0, len(uuids), 1000):  # bounded filters, however long the report
            docs = await self.deps.store.find(
                "taskforces",
                {"taskforce_uuid": {"$in": uuids[i : i + 1000]}, "schedd": {"$nin": sorted(caller.schedds)}},
                projection=["taskforce_uuid"],
            )
            refused.update(d["taskforce_uuid"] for d in docs)
        return refused
