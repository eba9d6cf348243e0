"""Paginated queries over one collection, always inside the caller's scope, at bounded cost."""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..caller import Caller
from ..errors import Invalid, Unprocessable
from ..query_filter import check_filter
from ..query_limits import QueryLimits, check_limits
from ..storage.base import FilterTooComplex, QueryTimeout, Storage
from ..storage.collections import COLLECTIONS
from ..storage.projection import ProjectionCollision, projection_tree

_AFTER = re.compile(r"^(?P<prefix>[A-Z]{1,2})-[0-9a-f]{12}-[0-9a-f]{4}-[0-9a-f]{6}$")


async def run_query(
    store: Storage,
    collection: str,
    body: dict[str, Any],
    caller: Caller,
    *,
    fields: frozenset[str],
    limits: QueryLimits,
    page_docs: int,
    page_bytes: int,
) -> tuple[list[dict[str, Any]], str | None]:
    spec = COLLECTIONS[collection]
    query = body.get("query", {})
    check_filter(query, fields, limits.max_depth)
    check_limits(query, limits)
    id_field = spec.id_field
    projection = list(body.get("projection") or []) or None
    if projection:
        for p in projection:
            if p.split(".")[0] not in fields:
                raise Invalid(f"body.projection: unknown field {p!r}")
        try:
            projection_tree(projection)
        except ProjectionCollision as e:
            raise Invalid(f"body.projection: {e}") from None
    after = body.get("after")
    clauses: list[dict[str, Any]] = []
    if query:
        clauses.append(query)
    if scope := caller.scope():
        clauses.append(scope)  # cannot be overridden: ANDed with whatever the caller sent
    if after is not None:
        m = _AFTER.match(after)
        if not m or m["prefix"] != spec.id_prefix:
            raise Invalid("body.after: not a next_after value of this query")
        clauses.append({id_field: {"$gt": after}})
    filter_ = {"$and": clauses} if len(clauses) > 1 else (clauses[0] if clauses else {})
    want_id = projection is None or id_field in projection
    fetch = projection if projection is None or want_id else [*projection, id_field]
    try:
        docs = await store.find(
            collection,
            filter_,
            projection=fetch,
            sort=[(id_field, 1)],
            limit=page_docs,
            budget_s=limits.time_budget_s,
        )
    except FilterTooComplex as e:
        raise Invalid(f"body.query: {e}") from None
    except QueryTimeout:
        raise Unprocessable(
            f"the query ran longer than its budget of {limits.time_budget_s:g} s "
            "(EWMS_QUERY_TIME_BUDGET_S) and was stopped: narrow the filter"
        ) from None
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
