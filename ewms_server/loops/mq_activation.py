"""Queue activation: make a new workflow's queues and credentials, then release its
taskforces to launch control; revoke and (after a grace period) delete an ended
workflow's queues. Every step is idempotent, so replicas may run it side by side.

Activating makes a new broker password, so two servers activating one workflow at once
would leave the store holding one password and the broker the other. A server therefore
first leases the workflow's first waiting taskforce (compare-and-set on `lease_until`) and
activates only if it got the lease; and queues already activated are never activated again
(a later pass only releases the taskforces)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import documents
from ..broker.base import BrokerAdapter, BrokerUnavailable, QueuesMissing
from ..ops.workflows import stop_taskforces
from ..phases import TERMINAL, Phase
from ..storage.base import Change, Storage
from ..webhooks.outbox import Event, Notifier

LOGGER = logging.getLogger("ewms_server.mq_activation")
ENTITY = "server:mq-activation"
BATCH = 100
ACTIVATION_LEASE_S = 300.0
"""How long one server may work on activating a workflow before another may try (the
broker adapter's calls time out long before; a failed attempt gives the lease back)."""


@dataclass
class MQActivation:
    store: Storage
    broker: BrokerAdapter
    wake_launch: Callable[[], None]
    wake_self: Callable[[], None]
    delete_grace_s: float
    revoke_max_wait_s: float = 600.0
    retry_s: float = 1.0
    _retry_after: float = 0.0
    notifier: Notifier | None = None

    async def one_pass(self) -> bool:
        busy = await self._activate()
        await self._retire()
        return busy

    async def _activate(self) -> bool:
        if time.time() < self._retry_after:
            return False
        pending = await self.store.find(
            "taskforces", {"phase": str(Phase.PRE_MQ_ACTIVATION)}, projection=["workflow_id"], limit=BATCH
        )
        done_any = False
        for wid in dict.fromkeys(tf["workflow_id"] for tf in pending):
            wf = await self.store.get("workflows", {"workflow_id": wid}, projection=["deactivated"])
            if wf is None:
                continue  # being created, or an orphan that launch control removes
            if wf["deactivated"] is not None:
                await stop_taskforces(self.store, wid, ENTITY, "workflow deactivated", notifier=self.notifier)
                continue
            lease = await self._lease(wid)
            if lease is None:
                continue  # another server is activating it (or just did)
            try:
                await self._activate_workflow(wid)
            except BrokerUnavailable as e:
                await self._give_back(lease)
                # the taskforces stay visibly in pre-mq-activation; retry with backoff
                self.retry_s = min(self.retry_s * 2, 60.0)
                self._retry_after = time.time() + self.retry_s
                asyncio.get_running_loop().call_later(self.retry_s, self.wake_self)
                LOGGER.warning("broker unavailable (%s); retrying in %.0f s", e, self.retry_s)
                return False
            except Exception:  # one bad workflow must not stall every other one
                LOGGER.exception("workflow %s: activation failed; skipping it this pass", wid)
                await self._give_back(lease)
                continue
            self.retry_s = 1.0
            done_any = True
        if done_any:
            self.wake_launch()
        return len(pending) == BATCH

    async def _lease(self, wid: str) -> str | None:
        """The workflow's first waiting taskforce, leased to this server; None if another has it."""
        waiting = {"workflow_id": wid, "phase": str(Phase.PRE_MQ_ACTIVATION)}
        first = await self.store.find(
            "taskforces", waiting, projection=["taskforce_uuid"], sort=[("taskforce_uuid", 1)], limit=1
        )
        if not first:
            return None
        uuid, now = first[0]["taskforce_uuid"], time.time()
        leased = await self.store.transition(
            "taskforces",
            {**waiting, "taskforce_uuid": uuid, "lease_until": {"$lte": now}},
            Change(set={"lease_until": now + ACTIVATION_LEASE_S}),
        )
        return uuid if leased else None

    async def _give_back(self, uuid: str) -> None:
        await self.store.transition(
            "taskforces",
            {"taskforce_uuid": uuid, "phase": str(Phase.PRE_MQ_ACTIVATION)},
            Change(set={"lease_until": 0.0}),
        )

    async def _activate_workflow(self, wid: str) -> None:
        profiles = await self.store.find(
            "mqprofiles", {"workflow_id": wid}, projection=["mqid", "is_activated"]
        )
        mqids = [p["mqid"] for p in profiles]
        fresh = any(not p["is_activated"] for p in profiles)  # activated ones keep their password
        access = await self.broker.activate_workflow(wid, mqids) if fresh else {}
        if access:
            await self.store.update_each(
                "mqprofiles",
                [
                    (
                        {"mqid": mqid},
                        Change(
                            set={
                                "is_activated": True,
                                "auth_token": a.auth_token,
                                "broker_type": a.broker_type,
                                "broker_address": a.broker_address,
                            }
                        ),
                    )
                    for mqid, a in access.items()
                ],
            )
        if self.notifier is not None:  # before the release: a crash in between re-runs all this
            await self.notifier.emit(wid, Event.QUEUES_ACTIVATED, details={"n_queues": len(mqids)})
        # compare-and-set on the phase: a deactivation that got here first is never undone
        entry = documents.log_entry(
            target_phase=Phase.PRE_LAUNCH,
            was_successful=True,
            source_entity=ENTITY,
            context=f"{len(mqids)} queue(s) activated",
        )
        n = await self.store.update_where(
            "taskforces",
            {"workflow_id": wid, "phase": str(Phase.PRE_MQ_ACTIVATION)},
            Change(
                set={"phase": str(Phase.PRE_LAUNCH), "lease_until": 0.0}, push={"phase_change_log": [entry]}
            ),
        )
        LOGGER.info("workflow %s: %d queue(s) activated, %d taskforce(s) released", wid, len(mqids), n)

    async def _mqids(self, wid: str) -> list[str]:
        profiles = await self.store.find("mqprofiles", {"workflow_id": wid}, projection=["mqid"])
        return [p["mqid"] for p in profiles]

    async def retire_all_now(self) -> int:
        """At shutdown: revoke the broker users of every ended workflow, and delete its vhost
        and queues unless a message is still in one (results not pulled, dead letters not
        read: those wait for the grace period, as without a stop), without waiting for
        taskforces (the caller bounds the time). Returns how many workflows it removed."""
        done = 0
        seen: set[str] = set()
        while True:
            ended = [
                wf
                for wf in await self.store.find(
                    "workflows",
                    {"queues_deleted": False, "deactivated": {"$in": ["ABORTED", "FINISHED"]}},
                    projection=["workflow_id", "queues_revoked"],
                    limit=BATCH + len(seen),
                )
                if wf["workflow_id"] not in seen
            ]
            for wf in ended:
                wid = wf["workflow_id"]
                seen.add(wid)
                if not wf["queues_revoked"]:  # first: its connections close, unacked return
                    await self._clean_up(wid, revoked=False, delete=False)
                unread = await self._unread(wid)
                if unread:
                    LOGGER.info(
                        "workflow %s ended with %d message(s) still queued: its queues stay for "
                        "their grace period (its broker user is revoked)",
                        wid,
                        unread,
                    )
                else:
                    await self._clean_up(wid, revoked=True, delete=True)
                    done += 1
            if len(ended) < BATCH:
                return done

    async def _unread(self, wid: str) -> int:
        """Messages still in the workflow's queues and dead-letter queues, as the management
        API counts them (its figures are refreshed every 5 s; a queue it has no figure for
        yet counts as empty)."""
        try:
            depths = await self.broker.queue_depths(wid, await self._mqids(wid))
        except QueuesMissing:
            return 0
        total = 0
        for d in depths.values():
            for n in (d.pending, d.in_flight, d.dead_lettered):
                total += n or 0
        return total

    async def _clean_up(self, wid: str, *, revoked: bool, delete: bool) -> None:
        mqids = await self._mqids(wid)
        if not revoked:
            await self.broker.deactivate_workflow(wid, mqids)
            await self.store.update_where(
                "mqprofiles", {"workflow_id": wid}, Change(set={"is_activated": False})
            )
            await self.store.transition(
                "workflows", {"workflow_id": wid}, Change(set={"queues_revoked": True})
            )
        if delete:
            await self.broker.delete_queues(wid, mqids)
            await self.store.transition(
                "workflows", {"workflow_id": wid}, Change(set={"queues_deleted": True})
            )

    async def _retire(self) -> None:
        now = time.time()
        ended = await self.store.find(
            "workflows",
            {
                "queues_deleted": False,
                "deactivated": {"$in": ["ABORTED", "FINISHED"]},
                "$or": [
                    {"queues_revoked": False},
                    {"deactivated_ts": {"$lte": now - self.delete_grace_s}},
                ],
            },
            projection=["workflow_id", "deactivated_ts", "queues_revoked"],
            limit=BATCH,
        )
        for wf in ended:
            wid = wf["workflow_id"]
            ended_for = now - (wf["deactivated_ts"] or now)
            if not wf["queues_revoked"] and ended_for < self.revoke_max_wait_s:
                live = await self.store.count(
                    "taskforces", {"workflow_id": wid, "phase": {"$nin": [str(p) for p in TERMINAL]}}
                )
                if live:
                    continue  # pilots are still being removed: let them end cleanly
            try:
                await self._clean_up(
                    wid, revoked=wf["queues_revoked"], delete=ended_for >= self.delete_grace_s
                )
            except BrokerUnavailable as e:
                LOGGER.warning("broker unavailable while retiring %s: %s", wid, e)
                return
