"""Routes under /v1/workflows and /v1/query/workflows."""

from __future__ import annotations

from .. import coercion
from ..errors import NotFound, Unavailable
from ..ops import workflows as ops
from ..ops.queries import run_query
from ..ops.reads import get_scoped, public_mqprofiles
from ..query_filter import check_projection
from ..rules import check_job_inputs
from ..storage.collections import COLLECTIONS
from .base import USERS, BaseHandler
from .secrets import NO_KEY


class WorkflowsHandler(BaseHandler):
    ROUTE = r"/v1/workflows"
    OPENAPI_PATH = "/v1/workflows"
    ROLES = {"POST": USERS}

    async def post(self) -> None:
        body = coercion.workflow_request(self.body())
        check_job_inputs(body, self.deps.cfg.job_limits)
        self.deps.cfg.webhooks.check_url(body.get("notify_url"))
        if self.deps.secrets_box is None and any(t.get("secrets") for t in body["tasks"]):
            raise Unavailable(f"a task names secrets, but {NO_KEY}")
        created = await ops.create_workflow(
            self.deps.store,
            self.deps.cfg.cluster_locations,
            self.caller,
            body,
            quotas=self.deps.quotas,
            autoscaled_pilot_env=self.deps.cfg.autoscale.pilot_env(),
        )
        self.deps.wake("mq_activation")
        if any(t.get("autoscale") for t in body["tasks"]):  # each pass scans the directives
            self.deps.wake("autoscale")
        self.send(self.deps.views.created(created))


class WorkflowIDHandler(BaseHandler):
    ROUTE = r"/v1/workflows/(?P<workflow_id>[^/]+)"
    OPENAPI_PATH = "/v1/workflows/{workflow_id}"
    ROLES = {"GET": USERS}

    async def get(self, workflow_id: str) -> None:
        wf = await get_scoped(self.deps.store, "workflows", workflow_id, self.caller)
        if wf is None:
            raise NotFound(f"no workflow {workflow_id}")
        self.send(self.deps.views.workflow(wf))


class _DeactivateHandler(BaseHandler):
    KIND = ""
    ROLES = {"POST": USERS}

    async def post(self, workflow_id: str) -> None:
        self.body()  # no body is defined: reject junk rather than ignore it
        n = await ops.deactivate_workflow(
            self.deps.store, workflow_id, self.KIND, self.caller, notifier=self.deps.notifier
        )
        self.deps.wake("mq_activation")
        self.send({"workflow_id": workflow_id, "n_taskforces": n})


class WorkflowIDActionsAbortHandler(_DeactivateHandler):
    ROUTE = r"/v1/workflows/(?P<workflow_id>[^/]+)/actions/abort"
    OPENAPI_PATH = "/v1/workflows/{workflow_id}/actions/abort"
    KIND = "ABORTED"


class WorkflowIDActionsFinishedHandler(_DeactivateHandler):
    ROUTE = r"/v1/workflows/(?P<workflow_id>[^/]+)/actions/finished"
    OPENAPI_PATH = "/v1/workflows/{workflow_id}/actions/finished"
    KIND = "FINISHED"


class WorkflowIDMQProfilesPublicHandler(BaseHandler):
    ROUTE = r"/v1/workflows/(?P<workflow_id>[^/]+)/mq-profiles/public"
    OPENAPI_PATH = "/v1/workflows/{workflow_id}/mq-profiles/public"
    ROLES = {"GET": USERS}

    async def get(self, workflow_id: str) -> None:
        if await get_scoped(self.deps.store, "workflows", workflow_id, self.caller, ["workflow_id"]) is None:
            raise NotFound(f"no workflow {workflow_id}")
        profiles = await public_mqprofiles(self.deps.store, workflow_id, self.caller)
        self.send({"mqprofiles": [self.deps.views.mq_profile(p) for p in profiles]})


class MQSWorkflowIDMQProfilesPublicHandler(WorkflowIDMQProfilesPublicHandler):
    """EWMS's clients reach its queue service (MQS) at this path: the same answer."""

    ROUTE = r"/v1/mqs/workflows/(?P<workflow_id>[^/]+)/mq-profiles/public"
    OPENAPI_PATH = "/v1/mqs/workflows/{workflow_id}/mq-profiles/public"


class QueryWorkflowsHandler(BaseHandler):
    ROUTE = r"/v1/query/workflows"
    OPENAPI_PATH = "/v1/query/workflows"
    ROLES = {"POST": USERS}
    COLLECTION, KEY = "workflows", "workflows"

    async def post(self) -> None:
        cfg = self.deps.cfg
        body = self.body()
        spec = COLLECTIONS[self.COLLECTION]
        check_projection(
            body.get("projection") or [], spec.id_field, self.deps.schema.schemas[spec.component]
        )
        docs, next_after = await run_query(
            self.deps.store,
            self.COLLECTION,
            body,
            self.caller,
            fields=self.deps.query_fields[self.COLLECTION],
            limits=self.deps.query_limits,
            page_docs=cfg.query_page_docs,
            page_bytes=cfg.query_page_bytes,
        )
        views = self.deps.views
        self.send({self.KEY: [views.of(self.COLLECTION, d) for d in docs], "next_after": next_after})
