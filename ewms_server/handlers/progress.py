"""Routes about a workflow's progress: how far its tasks are, and retrying its dead letters."""

from __future__ import annotations

from ..ops.dead_letters import retry_dead_letters
from ..progress_cache import ProgressCache
from .base import USERS, BaseHandler


class _ProgressHandler(BaseHandler):
    @property
    def cache(self) -> ProgressCache:
        assert self.deps.progress is not None, "the server builds the progress cache at start"
        return self.deps.progress


class WorkflowIDProgressHandler(_ProgressHandler):
    ROUTE = r"/v1/workflows/(?P<workflow_id>[^/]+)/progress"
    OPENAPI_PATH = "/v1/workflows/{workflow_id}/progress"
    ROLES = {"GET": USERS}

    async def get(self, workflow_id: str) -> None:
        self.send(await self.cache.progress(workflow_id, self.caller))


class WorkflowIDActionsRetryDeadLettersHandler(_ProgressHandler):
    ROUTE = r"/v1/workflows/(?P<workflow_id>[^/]+)/actions/retry-dead-letters"
    OPENAPI_PATH = "/v1/workflows/{workflow_id}/actions/retry-dead-letters"
    ROLES = {"POST": USERS}

    async def post(self, workflow_id: str) -> None:
        self.body()  # no body is defined: reject junk rather than ignore it
        n = await retry_dead_letters(
            self.deps.store,
            self.cache.broker,
            workflow_id,
            self.caller,
            self.deps.cfg.retry_dead_letters_max,
        )
        self.cache.forget(workflow_id)
        self.send({"requeued": n})
