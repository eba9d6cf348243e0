"""The adapter used when no broker is configured: activation succeeds and names no broker."""

from __future__ import annotations

from .base import BrokerUnavailable, QueueAccess, QueueDepth


class NullBrokerAdapter:
    """Lets the server run (and be tested) alone; the profiles carry no broker and no token."""

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        return {m: QueueAccess(m, None, None, None) for m in mqids}

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        return None

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        return None

    async def queue_depths(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueDepth]:
        raise BrokerUnavailable("no broker is configured (EWMS_BROKER_URL is unset)")

    async def requeue_dead_letters(self, workflow_id: str, mqids: list[str], limit: int) -> int:
        return 0  # no broker, so nothing was ever dead-lettered

    async def publish(self, workflow_id: str, mqid: str, payload: bytes) -> None:
        raise BrokerUnavailable("no broker is configured (EWMS_BROKER_URL is unset)")

    async def health(self) -> str | None:
        return None

    async def close(self) -> None:
        return None
