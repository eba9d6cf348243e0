"""The collections, their indexes, and the caller-scoped lookups every handler needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..schema import OpenAPI
from .base import Collection, Database, Filter, Sort, Update

COLLECTION_FIELDS_FOR_QUERY = ("workflows", "task_directives", "taskforces")
"""Collections open to /v1/query/*; mq profiles (they hold credentials) are not."""

ID_FIELDS = {
    "workflows": "workflow_id",
    "task_directives": "task_id",
    "taskforces": "taskforce_uuid",
    "mqprofiles": "mqid",
}


@dataclass(frozen=True)
class Caller:
    """Who is asking: the token subject and role ('user', 'admin', 'system-tms')."""

    subject: str
    role: str

    @property
    def entity(self) -> str:
        """How the audit trail names this caller."""
        return f"{self.role}:{self.subject}"

    def scope(self) -> Filter:
        """The ownership filter always applied to this caller's reads and writes."""
        return {} if self.role in ("admin", "system-tms") else {"owner": self.subject}


class Store:
    """Reads go straight to the collections; every write goes through the checked methods
    below, which validate what is written against the collection's schema."""

    def __init__(self, db: Database, schema: OpenAPI) -> None:
        self.db = db
        self.schema = schema
        self.workflows: Collection = db.collection("workflows")
        self.task_directives: Collection = db.collection("task_directives")
        self.taskforces: Collection = db.collection("taskforces")
        self.mqprofiles: Collection = db.collection("mqprofiles")

    def by_name(self, name: str) -> Collection:
        return {
            "workflows": self.workflows,
            "task_directives": self.task_directives,
            "taskforces": self.taskforces,
            "mqprofiles": self.mqprofiles,
        }[name]

    async def create_indexes(self) -> None:
        for name, id_field in ID_FIELDS.items():
            await self.by_name(name).create_index([(id_field, 1)], unique=True)
            if name != "workflows":
                await self.by_name(name).create_index([("workflow_id", 1)])
            await self.by_name(name).create_index([("owner", 1)])
        # the loops' repair sweeps: ended workflows not yet fully stopped / retired
        await self.workflows.create_index([("taskforces_stopped", 1), ("deactivated", 1)])
        await self.workflows.create_index([("queues_deleted", 1), ("deactivated", 1)])
        await self.taskforces.create_index([("phase", 1)])
        await self.taskforces.create_index([("schedd", 1), ("phase", 1)])
        await self.taskforces.create_index([("task_id", 1)])

    async def get_scoped(
        self, name: str, id_value: str, caller: Caller, projection: list[str] | None = None
    ) -> dict[str, Any] | None:
        return await self.by_name(name).find_one(
            {ID_FIELDS[name]: id_value, **caller.scope()}, projection=projection
        )

    # -- checked writes ----------------------------------------------------------------

    async def insert_many(self, name: str, docs: Sequence[Mapping[str, Any]]) -> None:
        for doc in docs:
            self.schema.check_document(name, doc)
        await self.by_name(name).insert_many([dict(d) for d in docs])

    async def update_one(self, name: str, filter: Filter, update: Update) -> int:
        self.schema.check_update(name, update)
        return await self.by_name(name).update_one(filter, update)

    async def update_many(self, name: str, filter: Filter, update: Update) -> int:
        self.schema.check_update(name, update)
        return await self.by_name(name).update_many(filter, update)

    async def find_one_and_update(
        self,
        name: str,
        filter: Filter,
        update: Update,
        *,
        sort: Sort | None = None,
        projection: list[str] | None = None,
    ) -> dict[str, Any] | None:
        self.schema.check_update(name, update)
        return await self.by_name(name).find_one_and_update(filter, update, sort=sort, projection=projection)
