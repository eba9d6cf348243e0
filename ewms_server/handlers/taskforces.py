"""Routes under /v1/taskforces and /v1/query/taskforces (the TMS may read these too)."""

from __future__ import annotations

from ..errors import NotFound
from ..ops.reads import get_scoped
from .base import ANYONE, BaseHandler
from .workflows import QueryWorkflowsHandler


class TaskforceUUIDHandler(BaseHandler):
    ROUTE = r"/v1/taskforces/(?P<taskforce_uuid>[^/]+)"
    OPENAPI_PATH = "/v1/taskforces/{taskforce_uuid}"
    ROLES = {"GET": ANYONE}

    async def get(self, taskforce_uuid: str) -> None:
        tf = await get_scoped(self.deps.store, "taskforces", taskforce_uuid, self.caller)
        if tf is None:
            raise NotFound(f"no taskforce {taskforce_uuid}")
        self.send(self.deps.views.taskforce(tf))


class QueryTaskforcesHandler(QueryWorkflowsHandler):
    ROUTE = r"/v1/query/taskforces"
    OPENAPI_PATH = "/v1/query/taskforces"
    ROLES = {"POST": ANYONE}
    COLLECTION, KEY = "taskforces", "taskforces"
