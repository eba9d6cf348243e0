"""GET /metrics: Prometheus' text exposition, for an admin token or EWMS_METRICS_TOKEN."""

from __future__ import annotations

import hmac

from ..caller import Caller
from ..errors import NotFound
from ..metrics import CONTENT_TYPE
from .base import BaseHandler

ADMIN = frozenset({"admin"})


class MetricsHandler(BaseHandler):
    ROUTE = r"/metrics"
    OPENAPI_PATH = "/metrics"
    ROLES = {"GET": ADMIN}

    async def admit(self) -> None:
        token = self.deps.cfg.metrics_token
        scheme, _, given = (self.request.headers.get("Authorization") or "").partition(" ")
        method = self.request.method or "GET"
        if (
            token
            and method in self.ROLES
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), token.encode())
        ):
            self.caller = Caller(subject="metrics-token", role="metrics")
            self.query = self.deps.schema.check_params(
                self.OPENAPI_PATH, method, self.path_kwargs, self.request.query_arguments
            )
            return
        await super().admit()  # else an admin's JWT, like any other route

    async def get(self) -> None:
        if self.deps.metrics is None:
            raise NotFound("metrics are off (EWMS_METRICS_ENABLED=false)")
        text = await self.deps.metrics.render()
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_status(200)
        self.finish(text)
