"""Launch control: release activated taskforces to their TMS (pre-launch -> pending-starter),
finish deactivations a crash interrupted, and remove orphans of interrupted creates."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .. import documents
from ..ops.workflows import stop_taskforces
from ..phases import Phase
from ..storage.base import Change, Storage
from ..webhooks.outbox import Notifier

LOGGER = logging.getLogger("ewms_server.launch_control")
ENTITY = "server:launch-control"
BATCH = 500


ENDED = ["ABORTED", "FINISHED"]


@dataclass
class LaunchControl:
    store: Storage
    orphan_age_s: float
    sweep_interval_s: float
    _last_sweep: float = 0.0
    notifier: Notifier | None = None

    async def one_pass(self) -> bool:
        busy = await self._release()
        # repairs of interrupted writes are rare: sweep on the timer, not on every wake
        if time.monotonic() - self._last_sweep >= self.sweep_interval_s:
            self._last_sweep = time.monotonic()
            await self._finish_deactivations()
            await self._remove_orphans()
        return busy

    async def _release(self) -> bool:
        ready = await self.store.find(
            "taskforces", {"phase": str(Phase.PRE_LAUNCH)}, projection=["workflow_id"], limit=BATCH
        )
        for wid in dict.fromkeys(tf["workflow_id"] for tf in ready):
            wf = await self.store.get("workflows", {"workflow_id": wid}, projection=["deactivated"])
            if wf is None or wf["deactivated"] is not None:
                await stop_taskforces(self.store, wid, ENTITY, "workflow deactivated", notifier=self.notifier)
                continue
            try:
                await self._release_workflow(wid)
            except Exception:  # one bad workflow must not stall every other one
                LOGGER.exception("workflow %s: release failed; skipping it this pass", wid)
        return len(ready) == BATCH

    async def _release_workflow(self, wid: str) -> None:
        entry = documents.log_entry(
            target_phase=Phase.PENDING_STARTER, was_successful=True, source_entity=ENTITY
        )
        await self.store.update_where(
            "taskforces",
            {"workflow_id": wid, "phase": str(Phase.PRE_LAUNCH)},
            Change(set={"phase": str(Phase.PENDING_STARTER)}, push={"phase_change_log": [entry]}),
        )

    async def _finish_deactivations(self) -> None:
        for wf in await self.store.find(
            "workflows",
            {"taskforces_stopped": False, "deactivated": {"$in": ENDED}},
            projection=["workflow_id"],
            limit=BATCH,
        ):
            await stop_taskforces(
                self.store, wf["workflow_id"], ENTITY, "workflow deactivated", notifier=self.notifier
            )

    async def _remove_orphans(self) -> None:
        """Parts of a create that crashed before its workflow document was written."""
        cutoff = time.time() - self.orphan_age_s
        candidates = {
            d["workflow_id"]
            for d in await self.store.find(
                "taskforces",
                {"phase": str(Phase.PRE_MQ_ACTIVATION), "timestamp": {"$lt": cutoff}},
                projection=["workflow_id"],
                limit=BATCH,
            )
        }
        for wid in candidates:
            if await self.store.get("workflows", {"workflow_id": wid}, projection=["workflow_id"]):
                continue
            LOGGER.warning("removing orphaned parts of an interrupted create: %s", wid)
            for name in ("taskforces", "task_directives", "mqprofiles"):
                await self.store.delete_where(name, {"workflow_id": wid})
