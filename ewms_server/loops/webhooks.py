"""Webhook delivery: send the outbox's pending rows at least once, in order per workflow, with
exponential backoff; and watch running workflows with a notify_url for input-consumed.

Replicas share the outbox: a row is claimed with a lease (compare-and-set on `lease_until`)
before its attempt, and the attempt's outcome is written only under that lease, so no row is
sent twice at once. A server killed mid-attempt leaves the lease to run out; then any server
sends the row again (with the same delivery id: receivers de-duplicate by X-EWMS-Delivery)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..storage.base import Change, Storage
from ..webhooks.outbox import Event, Notifier, Status
from ..webhooks.sender import Answer, Sender
from ..webhooks.settings import WebhookSettings, host_of

if TYPE_CHECKING:
    from ..progress_cache import ProgressCache

LOGGER = logging.getLogger("ewms_server.webhooks")
PARALLEL = 8
"""Attempts one server makes at once."""
WATCH_BATCH = 500
RETRYABLE = frozenset({408, 429})
"""Besides 5xx and no answer: the other answers give up at once."""
CLAIM_ORDER = [("next_attempt_ts", 1)]


@dataclass
class WebhookDelivery:
    store: Storage
    settings: WebhookSettings
    notifier: Notifier
    progress: ProgressCache | None
    wake_self: Callable[[], None]
    sender: Sender = field(init=False)
    _next_watch: float = 0.0
    _timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.sender = Sender(self.settings.secret or "", self.settings.timeout_s, max_clients=PARALLEL)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.sender.close()

    async def one_pass(self) -> bool:
        if time.time() >= self._next_watch:
            self._next_watch = time.time() + self.settings.input_check_s
            await self._watch()
        claimed = []
        for _ in range(PARALLEL):
            row = await self._claim()
            if row is None:
                break
            claimed.append(row)
        # each row's turn is decided before any is sent: a row sent now releases the later
        # ones it holds back, which must already be marked as held back
        ready = [row for row in claimed if not await self._held_back(row)]
        await asyncio.gather(*(self._deliver(row) for row in ready))
        await self._wake_when_due()
        return len(claimed) == PARALLEL

    # -- delivery ------------------------------------------------------------------------------

    async def _claim(self) -> dict[str, Any] | None:
        now = time.time()
        return await self.store.claim(
            "webhook_outbox",
            {"status": str(Status.PENDING), "next_attempt_ts": {"$lte": now}, "lease_until": {"$lte": now}},
            sort=CLAIM_ORDER,
            change=Change(set={"lease_until": now + self.settings.lease_s}),
        )

    async def _held_back(self, row: dict[str, Any]) -> bool:
        """The workflow's earlier events go first: while one is pending, this one waits (and is
        released when that one is done)."""
        earlier = await self.store.find(
            "webhook_outbox",
            {
                "workflow_id": row["workflow_id"],
                "status": str(Status.PENDING),
                "created_ts": {"$lt": row["created_ts"]},
            },
            projection=["next_attempt_ts", "lease_until"],
            sort=[("created_ts", 1)],
            limit=1,
        )
        if not earlier:
            return False
        until = max(earlier[0]["next_attempt_ts"], earlier[0]["lease_until"]) + 0.01
        await self.store.transition(
            "webhook_outbox", _lease_of(row), Change(set={"next_attempt_ts": until, "lease_until": 0.0})
        )
        return True

    async def _deliver(self, row: dict[str, Any]) -> None:
        mine = _lease_of(row)
        host = host_of(row["url"])
        why = self.settings.refusal(row["url"])
        if why is not None:  # the allow-list changed since the workflow was submitted
            answer = Answer(0, f"not sent: {why}", None)
        else:
            answer = await self.sender.post(
                row["url"], row["body"], delivery_id=row["delivery_id"], event=row["event"]
            )
        attempts = row["attempts"] + (why is None)
        now = time.time()
        fields: dict[str, Any] = {
            "attempts": attempts,
            "last_status": answer.status or None,
            "lease_until": 0.0,
        }
        if answer.error is None:
            fields.update(status=str(Status.DELIVERED), delivered_ts=now, last_error=None)
            outcome = f"delivered ({answer.status})"
        else:
            fields["last_error"] = answer.error[:1000]
            retry = why is None and (answer.status in RETRYABLE or answer.status >= 500)
            age = now - row["created_ts"]
            if retry and attempts < self.settings.max_attempts and age < self.settings.max_age_s:
                fields["next_attempt_ts"] = now + self._delay(attempts, answer.retry_after_s)
                outcome = f"failed ({answer.error}); retry {attempts + 1} in {fields['next_attempt_ts'] - now:.1f} s"
            else:
                fields["status"] = str(Status.FAILED)
                outcome = f"given up after {attempts} attempt(s): {answer.error}"
        if not await self.store.transition("webhook_outbox", mine, Change(set=fields)):
            LOGGER.warning("webhook %s: lease lost before its outcome was recorded", row["delivery_id"])
            return
        level = logging.INFO if answer.error is None else logging.WARNING
        LOGGER.log(
            level,
            "webhook %s %s of %s to %s: %s",
            row["delivery_id"],
            row["event"],
            row["workflow_id"],
            host,
            outcome,
        )
        if "status" in fields:  # done: the workflow's next events may go now
            n = await self.store.update_where(
                "webhook_outbox",
                {
                    "workflow_id": row["workflow_id"],
                    "status": str(Status.PENDING),
                    "attempts": 0,
                    "created_ts": {"$gt": row["created_ts"]},
                    "next_attempt_ts": {"$gt": now},
                },
                Change(set={"next_attempt_ts": now}),
            )
            if n:
                self.wake_self()

    def _delay(self, attempts: int, retry_after_s: float | None) -> float:
        s = self.settings
        delay = min(s.retry_base_s * 2 ** (attempts - 1), s.retry_max_s)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, s.retry_max_s))
        return float(delay)

    async def _wake_when_due(self) -> None:
        """Wake at the next due attempt (or input check), sooner than the loop's interval."""
        due = await self.store.find(
            "webhook_outbox",
            {"status": str(Status.PENDING), "lease_until": {"$lte": time.time()}},  # not being sent
            projection=["next_attempt_ts"],
            sort=CLAIM_ORDER,
            limit=1,
        )
        at = self._next_watch
        if due:
            at = min(at, due[0]["next_attempt_ts"])
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, at - time.time()), self.wake_self)

    # -- input-consumed ------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Workflows whose first worker ran: once the progress figures (cached; the broker is
        asked at most once per EWMS_PROGRESS_CACHE_S) show tasks done and nothing ready or in
        flight in the tasks' input queues, their input is consumed."""
        watched = await self.store.find(
            "workflows", {"notify_watch": True}, projection=["workflow_id", "deactivated"], limit=WATCH_BATCH
        )
        for wf in watched:
            wid = wf["workflow_id"]
            if wf["deactivated"] is None:
                if self.progress is None:
                    continue
                figures = await self.progress.figures(wid)
                totals = (figures or {}).get("totals") or {}
                done = (totals.get("succeeded") or 0) + (totals.get("failed") or 0)
                if not (totals.get("pending") == 0 and totals.get("in_flight") == 0 and done > 0):
                    continue
                details = {k: totals.get(k) for k in ("succeeded", "failed", "dead_lettered")}
                await self.notifier.emit(wid, Event.INPUT_CONSUMED, details=details)
            await self.store.transition(
                "workflows", {"workflow_id": wid, "notify_watch": True}, Change(set={"notify_watch": False})
            )


def _lease_of(row: dict[str, Any]) -> dict[str, Any]:
    """The filter of a row as long as this server holds it (its lease unchanged)."""
    return {"delivery_id": row["delivery_id"], "lease_until": row["lease_until"]}
