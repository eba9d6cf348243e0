"""Retrying a workflow's dead letters: its failed messages go back to their queues."""

from __future__ import annotations

from ..broker.base import BrokerAdapter, BrokerUnavailable, QueuesMissing
from ..caller import Caller
from ..errors import NotFound, Unavailable, Unprocessable
from ..storage.base import Storage
from .reads import get_scoped


async def retry_dead_letters(
    store: Storage, broker: BrokerAdapter, workflow_id: str, caller: Caller, limit: int
) -> int:
    """Move up to `limit` dead-lettered messages of the workflow back to their queues."""
    wf = await get_scoped(store, "workflows", workflow_id, caller, ["queues_deleted"])
    if wf is None:
        raise NotFound(f"no workflow {workflow_id}")
    if wf.get("queues_deleted"):
        raise Unprocessable(f"workflow {workflow_id}: its queues were deleted after it ended")
    profiles = await store.find("mqprofiles", {"workflow_id": workflow_id}, projection=["mqid"])
    try:
        return await broker.requeue_dead_letters(workflow_id, [p["mqid"] for p in profiles], limit)
    except QueuesMissing as e:
        raise Unprocessable(f"workflow {workflow_id}: its queues are not on the broker ({e})") from None
    except BrokerUnavailable as e:
        raise Unavailable(f"the broker cannot be reached: {e}") from None
