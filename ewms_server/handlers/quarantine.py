"""Routes about quarantined machines: who sees which entries, and admins' edits."""

from __future__ import annotations

from ..ops import quarantine as ops
from .base import TMS, USERS, BaseHandler
from .tms import _ScheddHandler

ADMIN = frozenset({"admin"})


class QuarantineHandler(BaseHandler):
    ROUTE = r"/v1/quarantine"
    OPENAPI_PATH = "/v1/quarantine"
    ROLES = {"GET": USERS, "POST": ADMIN}

    async def get(self) -> None:
        self.send({"machines": await ops.visible(self.deps.store, self.caller)})

    async def post(self) -> None:
        cfg = self.deps.cfg
        entry = await ops.add(
            self.deps.store, self.body(), self.caller, cfg.quarantine, list(cfg.cluster_locations)
        )
        self.send(entry)


class QuarantineIDHandler(BaseHandler):
    ROUTE = r"/v1/quarantine/(?P<machine>[^/]+)"
    OPENAPI_PATH = "/v1/quarantine/{machine}"
    ROLES = {"DELETE": ADMIN}

    async def delete(self, machine: str) -> None:
        location = self.query["location"]
        n = await ops.lift(self.deps.store, machine, location)
        self.send({"machine": machine, "location": location, "lifted": n})


class TMSQuarantineHandler(_ScheddHandler):
    ROUTE = r"/v1/tms/quarantine"
    OPENAPI_PATH = "/v1/tms/quarantine"
    ROLES = {"GET": TMS}

    async def get(self) -> None:
        schedd = self.query["schedd"]
        locations = [name for name, loc in self.deps.cfg.cluster_locations.items() if loc.schedd == schedd]
        self.send({"machines": await ops.active(self.deps.store, locations)})
