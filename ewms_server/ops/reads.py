"""Lookups inside the caller's scope (another user's object is simply not found)."""

from __future__ import annotations

from typing import Any

from ..caller import Caller
from ..storage.base import Storage
from ..storage.collections import COLLECTIONS


async def get_scoped(
    store: Storage, coll: str, id_value: str, caller: Caller, projection: list[str] | None = None
) -> dict[str, Any] | None:
    return await store.get(
        coll, {COLLECTIONS[coll].id_field: id_value, **caller.scope()}, projection=projection
    )


async def public_mqprofiles(store: Storage, workflow_id: str, caller: Caller) -> list[dict[str, Any]]:
    return await store.find(
        "mqprofiles",
        {"workflow_id": workflow_id, "is_public": True, **caller.scope()},
        sort=[("mqid", 1)],
    )
