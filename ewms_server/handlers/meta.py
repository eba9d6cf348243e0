"""Routes about the server itself: `/v1/`, health, and the OpenAPI schema."""

from __future__ import annotations

import asyncio

from .base import ANYONE, PUBLIC, BaseHandler


class MainHandler(BaseHandler):
    ROUTE = r"/v1/?"
    OPENAPI_PATH = "/v1/"
    ROLES = {"GET": ANYONE}

    async def get(self) -> None:
        self.send({})


class HealthHandler(BaseHandler):
    ROUTE = r"/v1/health"
    OPENAPI_PATH = "/v1/health"
    ROLES = {"GET": PUBLIC}

    async def get(self) -> None:
        db: dict[str, object] = {"healthy": True}
        try:
            await asyncio.wait_for(self.deps.store.ping(), timeout=3)
        except Exception as e:  # any failure to reach the database is "unhealthy"
            db = {"healthy": False, "error": f"{type(e).__name__}: {e}"[:500]}
        loops = {
            name: {"healthy": s.healthy(), "last_pass_ts": s.last_pass_ts, "last_error": s.last_error}
            for name, s in self.deps.loops.items()
        }
        broker: dict[str, object] = {"healthy": True, "configured": self.deps.broker_health is not None}
        if self.deps.broker_health is not None and (problem := await self.deps.broker_health.problem()):
            broker.update(healthy=False, error=problem)
        healthy = (
            bool(db["healthy"]) and bool(broker["healthy"]) and all(v["healthy"] for v in loops.values())
        )
        body = {"healthy": healthy, "database": db, "broker": broker, "loops": loops}
        self.send(body, 200 if healthy else 503)


class SchemaHandler(BaseHandler):
    ROUTE = r"/v1/schema/openapi"
    OPENAPI_PATH = "/v1/schema/openapi"
    ROLES = {"GET": PUBLIC}

    async def get(self) -> None:
        self.set_status(200)
        self.finish(self.deps.schema.text)
