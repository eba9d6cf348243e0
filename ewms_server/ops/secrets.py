"""Users' secrets: set, list, delete, and the values a taskforce's pilots fetch.

Always scoped to the owner (the token's subject), whatever the role: an admin has secrets of
its own and sees no one else's. No function here returns or raises a value.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import documents
from ..errors import Forbidden, Invalid, NotFound, TooManyRequests, Unavailable
from ..phases import TERMINAL
from ..secrets_box import SecretsBox, Undecryptable
from ..storage.base import Change, DuplicateKey, Storage

SHOWN = ("key", "created_ts", "updated_ts")


def shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A secret as its owner sees it: never the value."""
    return {k: doc[k] for k in SHOWN}


async def put(
    store: Storage, box: SecretsBox, owner: str, key: str, value: str, *, max_per_user: int
) -> dict[str, Any]:
    """Create or replace; 429 when the owner already keeps `max_per_user` others."""
    ciphertext = box.encrypt(owner, key, value)
    for _ in range(3):
        if await _replace(store, owner, key, ciphertext):
            break
        if max_per_user and await store.count("secrets", {"owner": owner}) >= max_per_user:
            raise TooManyRequests(
                f"you keep {max_per_user} secrets already (EWMS_SECRETS_MAX_PER_USER): delete one first",
                retry_after=60,
            )
        try:
            await store.insert("secrets", [documents.secret(owner=owner, key=key, ciphertext=ciphertext)])
            break
        except DuplicateKey:  # set at the same moment by another request: replace that one
            continue
    doc = await store.get("secrets", {"owner": owner, "key": key}, projection=list(SHOWN))
    assert doc is not None
    return shown(doc)


async def _replace(store: Storage, owner: str, key: str, ciphertext: str) -> bool:
    change = Change(set={"ciphertext": ciphertext, "updated_ts": time.time()})
    return await store.transition("secrets", {"owner": owner, "key": key}, change)


async def listing(store: Storage, owner: str) -> list[dict[str, Any]]:
    docs = await store.find("secrets", {"owner": owner}, projection=list(SHOWN))
    return sorted((shown(d) for d in docs), key=lambda d: d["key"])


async def delete(store: Storage, owner: str, key: str) -> dict[str, Any]:
    doc = await store.get("secrets", {"owner": owner, "key": key}, projection=list(SHOWN))
    if doc is None or not await store.delete_where("secrets", {"owner": owner, "key": key}):
        raise NotFound(f"you have no secret {key!r}")
    return shown(doc)


async def check_named(store: Storage, owner: str, keys: Iterable[str]) -> None:
    """400 naming every key the owner has no secret for (a workflow naming secrets)."""
    wanted = sorted(set(keys))
    if not wanted:
        return
    have = await store.find("secrets", {"owner": owner, "key": {"$in": wanted}}, projection=["key"])
    missing = sorted(set(wanted) - {d["key"] for d in have})
    if missing:
        raise Invalid(
            f"tasks[].secrets: you have no secret named {', '.join(missing)} (PUT /v1/secrets/{{key}})"
        )


async def for_taskforce(store: Storage, box: SecretsBox, taskforce_uuid: str) -> dict[str, str]:
    """The values a taskforce's task names, while its workflow runs (else Forbidden)."""
    tf = await store.get(
        "taskforces", {"taskforce_uuid": taskforce_uuid}, projection=["workflow_id", "task_id", "phase"]
    )
    if tf is None or tf["phase"] in TERMINAL:
        raise Forbidden(
            f"taskforce {taskforce_uuid} has ended or does not exist: its secrets token is revoked"
        )
    wf = await store.get("workflows", {"workflow_id": tf["workflow_id"]}, projection=["deactivated"])
    if wf is None or wf["deactivated"] is not None:
        raise Forbidden(f"workflow {tf['workflow_id']} has ended: its secrets tokens are revoked")
    td = await store.get("task_directives", {"task_id": tf["task_id"]}, projection=["owner", "secrets"])
    if td is None:
        raise Forbidden(f"taskforce {taskforce_uuid} has no task directive")
    keys = list(td.get("secrets") or [])
    if not keys:
        return {}
    docs = await store.find("secrets", {"owner": td["owner"], "key": {"$in": keys}})
    by_key = {d["key"]: d for d in docs}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise NotFound(f"secret(s) {', '.join(missing)} of the workflow's owner no longer exist")
    try:
        return {k: box.decrypt(td["owner"], k, by_key[k]["ciphertext"]) for k in keys}
    except Undecryptable as e:  # EWMS_SECRETS_KEY changed since it was set
        raise Unavailable(f"{e} (was the key changed? set the secret again)") from None
