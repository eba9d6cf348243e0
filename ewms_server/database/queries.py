"""Paginated queries over one collection, always inside the caller's scope."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..errors import Invalid
from ..query_filter import check_filter
from .store import ID_FIELDS, Caller, Store

_AFTER = re.compile(r"^(?P<prefix>[A-Z]{1,2})-[0-9a-f]{12}-[0-9a-f]{4}-[0-9a-f]{6}$")
ID_PREFIXES = {"workflows": "WF", "task_directives": "TK", "taskforces": "TF"}


async def run_query(
    store: Store,
    collection: str,
    body: dict[str, Any],
    caller: Caller,
    *,
    fields: frozenset[str],
    max_depth: int,
    page_docs: int,
    page_bytes: int,
) -> tuple[list[dict[str, Any]], str | None]:
    query = body.get("query", {})
    check_filter(query, fields, max_depth)
    id_field = ID_FIELDS[collection]
    projection = list(body.get("projection") or []) or None
    if projection:
        for p in projection:
            if p.split(".")[0] not in fields:
                raise Invalid(f"body.projection: unknown field {p!r}")
    after = body.get("after")
    clauses: list[dict[str, Any]] = []
    if query:
        clauses.append(query)
    if scope := caller.scope():
        clauses.append(scope)  # cannot be overridden: ANDed with whatever the caller sent
    if after is not None:
        m = _AFTER.match(after)
        if not m or m["prefix"] != ID_PREFIXES[collection]:
            raise Invalid("body.after: not a next_after value of this query")
        clauses.append({id_field: {"$gt": after}})
    filter_ = {"$and": clauses} if len(clauses) > 1 else (clauses[0] if clauses else {})
    want_id = projection is None or id_field in projection
    fetch = projection if projection is None or want_id else [*projection, id_field]
    docs = await store.by_name(collection).find(
        filter_, projection=fetch, sort=[(id_field, 1)], limit=page_docs
    )
    out: list[dict[str, Any]] = []
    size, last = 0, None
    for doc in docs:
        size += len(orjson.dumps(doc))
        if out and size > page_bytes:
            break
        last = doc[id_field]
        if not want_id:
            doc.pop(id_field, None)
        out.append(doc)
    full = len(out) < len(docs) or len(docs) == page_docs
    return out, (last if full and out else None)
