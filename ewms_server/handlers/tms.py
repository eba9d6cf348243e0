"""Routes under /v1/tms: for the Taskforce Management Service (role system-tms, or admin)."""

from __future__ import annotations

from ..ops import taskforces as ops
from .base import TMS, BaseHandler


class TMSPendingStarterHandler(BaseHandler):
    ROUTE = r"/v1/tms/pending-starter/taskforces"
    OPENAPI_PATH = "/v1/tms/pending-starter/taskforces"
    ROLES = {"GET": TMS}

    async def get(self) -> None:
        found = await ops.next_pending_starter(
            self.deps.store, self.query["schedd"], self.deps.cfg.starter_lease_s
        )
        self.send(found or {})


class TMSPendingStopperHandler(BaseHandler):
    ROUTE = r"/v1/tms/pending-stopper/taskforces"
    OPENAPI_PATH = "/v1/tms/pending-stopper/taskforces"
    ROLES = {"GET": TMS}

    async def get(self) -> None:
        found = await ops.next_pending_stopper(
            self.deps.store, self.query["schedd"], self.deps.cfg.starter_lease_s
        )
        self.send(found or {})


class TMSCondorSubmitUUIDHandler(BaseHandler):
    ROUTE = r"/v1/tms/condor-submit/taskforces/(?P<taskforce_uuid>[^/]+)"
    OPENAPI_PATH = "/v1/tms/condor-submit/taskforces/{taskforce_uuid}"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        await ops.condor_submit(self.deps.store, taskforce_uuid, self.body(), self.caller)
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorSubmitUUIDFailedHandler(BaseHandler):
    ROUTE = r"/v1/tms/condor-submit/taskforces/(?P<taskforce_uuid>[^/]+)/failed"
    OPENAPI_PATH = "/v1/tms/condor-submit/taskforces/{taskforce_uuid}/failed"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        cfg = self.deps.cfg
        await ops.condor_submit_failed(
            self.deps.store,
            taskforce_uuid,
            self.body().get("error", "(no error given)"),
            self.caller,
            cfg.max_submit_attempts,
            cfg.submit_retry_delay_s,
        )
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorRmUUIDHandler(BaseHandler):
    ROUTE = r"/v1/tms/condor-rm/taskforces/(?P<taskforce_uuid>[^/]+)"
    OPENAPI_PATH = "/v1/tms/condor-rm/taskforces/{taskforce_uuid}"
    ROLES = {"POST": TMS}

    async def post(self, taskforce_uuid: str) -> None:
        self.body()
        await ops.condor_rm(self.deps.store, taskforce_uuid, self.caller)
        self.send({"taskforce_uuid": taskforce_uuid})


class TMSCondorRmUUIDFailedHandler(BaseHandler):
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


class TMSCondorCompleteUUIDHandler(BaseHandler):
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

    async def post(self) -> None:
        results = await ops.update_statuses(self.deps.store, self.body())
        failed = any(r["status"] != "updated" for r in results)
        self.send({"results": results}, 207 if failed else 200)
