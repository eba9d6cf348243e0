"""Routes under /v1/task-directives and /v1/query/task-directives."""

from __future__ import annotations

from ..errors import NotFound
from ..ops.reads import get_scoped
from ..ops.workflows import add_workers
from .base import USERS, BaseHandler
from .workflows import QueryWorkflowsHandler


class TaskDirectiveIDHandler(BaseHandler):
    ROUTE = r"/v1/task-directives/(?P<task_id>[^/]+)"
    OPENAPI_PATH = "/v1/task-directives/{task_id}"
    ROLES = {"GET": USERS}

    async def get(self, task_id: str) -> None:
        td = await get_scoped(self.deps.store, "task_directives", task_id, self.caller)
        if td is None:
            raise NotFound(f"no task directive {task_id}")
        self.send(self.deps.views.task_directive(td))


class TaskDirectiveIDActionsAddWorkersHandler(BaseHandler):
    ROUTE = r"/v1/task-directives/(?P<task_id>[^/]+)/actions/add-workers"
    OPENAPI_PATH = "/v1/task-directives/{task_id}/actions/add-workers"
    ROLES = {"POST": USERS}

    async def post(self, task_id: str) -> None:
        body = self.body()
        tf = await add_workers(
            self.deps.store,
            self.deps.cfg.cluster_locations,
            self.caller,
            task_id,
            body["cluster_location"],
            body["n_workers"],
            quotas=self.deps.quotas,
        )
        self.deps.wake("mq_activation")
        self.deps.wake("launch_control")
        self.send(self.deps.views.taskforce(tf))


class QueryTaskDirectivesHandler(QueryWorkflowsHandler):
    ROUTE = r"/v1/query/task-directives"
    OPENAPI_PATH = "/v1/query/task-directives"
    COLLECTION, KEY = "task_directives", "task_directives"
