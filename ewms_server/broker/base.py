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


class BrokerAdapter(Protocol):
    """One implementation per broker kind; all methods are idempotent."""

    async def activate_workflow(self, workflow_id: str, mqids: list[str]) -> dict[str, QueueAccess]:
        """Declare the queues (durable) and issue credentials that reach only this workflow's
        queues. Return the access of every mqid. Raise BrokerUnavailable on transient errors."""

    async def deactivate_workflow(self, workflow_id: str, mqids: list[str]) -> None:
        """Revoke the workflow's credentials; the queues stay until `delete_queues`."""

    async def delete_queues(self, workflow_id: str, mqids: list[str]) -> None:
        """Delete the workflow's queues (after the grace period the caller waited)."""

    async def close(self) -> None: ...
