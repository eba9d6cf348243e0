"""The broker-adapter protocol: how the server makes, opens and closes a workflow's queues."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class BrokerUnavailable(Exception):
    """A transient broker failure: the caller retries later with backoff."""


@dataclass(frozen=True)
class QueueAccess:
    """What a pilot or a user needs to reach one queue."""

    mqid: str
    auth_token: str | None
    broker_type: str | None
    broker_address: str | None


class QueuesMissing(Exception):
    """The workflow's queues do not exist on the broker (not made yet, or deleted)."""


@dataclass(frozen=True)
class QueueDepth:
    """One queue's messages as the broker counts them; None where it has no figure yet."""

    pending: int | None
    """Ready to be delivered."""
    in_flight: int | None
    """Delivered, not yet acknowledged (a task is running on it)."""
    dead_lettered: int | None
    """In its dead-letter queue (`<mqid>.dead-letter`)."""


class BrokerAdapter(Protocol):
    """One implementation per broker kind; all methods are idempotent."""

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        """Declare the queues (durable) and issue credentials that reach only this workflow's
        queues. Return the access of every mqid. Raise BrokerUnavailable on transient errors."""

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        """Revoke the workflow's credentials; the queues stay until `delete_queues`."""

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        """Delete the workflow's queues (after the grace period the caller waited)."""

    async def queue_depths(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueDepth]:
        """Every mqid's depth, in one broker call. Raise QueuesMissing when the workflow's
        queues are not there, BrokerUnavailable when the broker cannot be asked."""

    async def requeue_dead_letters(self, workflow_id: str, mqids: list[str], limit: int) -> int:
        """Move up to `limit` dead-lettered messages back to their queues, each republished
        (and confirmed) before it leaves the dead-letter queue; return how many moved. Raise
        QueuesMissing when the workflow's queues are not there."""

    async def publish(self, workflow_id: str, mqid: str, payload: bytes) -> None:
        """Put one persistent message on `mqid` (a job's one message). Raise QueuesMissing
        when the queue is not there, BrokerUnavailable when the broker cannot be asked."""

    async def health(self) -> str | None:
        """None when the broker answers with the admin rights the adapter needs; else what is
        wrong, in words (no secret in them)."""

    async def close(self) -> None: ...
