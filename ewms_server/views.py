"""What a client sees of each collection: the fields its schema component lists, nothing else.

Stored documents also carry the server's bookkeeping (leases, retry counters, the loops'
progress flags; `x-ewms-stored` in the schema), which the loops and claims need and which is
indexed. No response carries it: every route that returns documents (reads, query pages,
creates, add-workers, the TMS's pending-starter and pending-stopper) shapes them here, one
function per collection, and the component in schema/openapi.json says exactly what that is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .schema import OpenAPI
from .storage.collections import COLLECTIONS

Doc = Mapping[str, Any]


class Views:
    """The shown fields of each collection, read once from the schema."""

    def __init__(self, schema: OpenAPI) -> None:
        self.fields: dict[str, frozenset[str]] = {
            name: frozenset(schema.schemas[spec.component]["properties"])
            for name, spec in COLLECTIONS.items()
        }

    def of(self, collection: str, doc: Doc) -> dict[str, Any]:
        """The shown fields `doc` has (a projected query page has only some of them)."""
        shown = self.fields[collection]
        return {k: v for k, v in doc.items() if k in shown}

    def workflow(self, doc: Doc) -> dict[str, Any]:
        return self.of("workflows", doc)

    def task_directive(self, doc: Doc) -> dict[str, Any]:
        return self.of("task_directives", doc)

    def taskforce(self, doc: Doc) -> dict[str, Any]:
        return self.of("taskforces", doc)

    def mq_profile(self, doc: Doc) -> dict[str, Any]:
        return self.of("mqprofiles", doc)

    def created(self, created: Mapping[str, Any]) -> dict[str, Any]:
        """The answer to POST /v1/workflows."""
        return {
            "workflow": self.workflow(created["workflow"]),
            "task_directives": [self.task_directive(d) for d in created["task_directives"]],
            "taskforces": [self.taskforce(d) for d in created["taskforces"]],
        }

    def pending_starter(self, found: Mapping[str, Any] | None) -> dict[str, Any]:
        """The answer to the TMS's GET pending-starter ({} when nothing is pending)."""
        if not found:
            return {}
        return {
            "taskforce": self.taskforce(found["taskforce"]),
            "task_directive": td if (td := found["task_directive"]) is None else self.task_directive(td),
            "mqprofiles": [self.mq_profile(p) for p in found["mqprofiles"]],
        }
