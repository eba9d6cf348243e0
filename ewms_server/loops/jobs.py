"""The jobs loop (issue 13): publish each new job's one message once its queues are active;
delete finished jobs' files after EWMS_JOBS_RETENTION_S.

The message is `{"job_id", "server_url", "token"}`: the runner token, made here, right
before publishing (the store keeps only its digest, so it never exists anywhere else). A
crash between the publish and marking the job published publishes again with a new token:
the first message's runner is then refused (401) and its message fails, while the second
runs; a job is never left without a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from ..broker.base import BrokerAdapter, BrokerUnavailable, QueuesMissing
from ..job_rules import QUEUE_IN
from ..ops.jobs import FINISHED, QUEUED, new_runner_token
from ..storage.base import Change, Storage
from ..storage.files_base import FileStore

LOGGER = logging.getLogger("ewms_server.jobs")
BATCH = 100


@dataclass
class JobsLoop:
    store: Storage
    files: FileStore
    broker: BrokerAdapter
    server_url: Callable[[], str]
    retention_s: float

    async def one_pass(self) -> bool:
        busy = await self._publish()
        busy = await self._expire() or busy
        return busy

    async def _publish(self) -> bool:
        waiting = await self.store.find(
            "jobs",
            {"published": False, "state": QUEUED},
            projection=["job_id", "workflow_id"],
            sort=[("job_id", 1)],
            limit=BATCH,
        )
        for job in waiting:
            wid = job["workflow_id"]
            queue = await self.store.get(
                "mqprofiles", {"workflow_id": wid, "alias": QUEUE_IN}, projection=["mqid", "is_activated"]
            )
            if queue is None or not queue["is_activated"]:
                continue  # queue activation wakes this loop
            token, digest = new_runner_token()
            jid = job["job_id"]
            if not await self.store.transition(
                "jobs", {"job_id": jid, "published": False}, Change(set={"runner_token_sha256": digest})
            ):
                continue
            payload = orjson.dumps({"job_id": jid, "server_url": self.server_url(), "token": token})
            try:
                await self.broker.publish(wid, queue["mqid"], payload)
            except (BrokerUnavailable, QueuesMissing) as e:
                LOGGER.warning("job %s: its message is not published yet: %s", jid, e)
                return False
            await self.store.transition("jobs", {"job_id": jid}, Change(set={"published": True}))
            LOGGER.info("job %s: message published", jid)
        return len(waiting) == BATCH

    async def _expire(self) -> bool:
        old = await self.store.find(
            "jobs",
            {"files_deleted": False, "finished_ts": {"$lte": time.time() - self.retention_s}},
            projection=["job_id", "state"],
            limit=BATCH,
        )
        for job in old:
            if job["state"] not in FINISHED:
                continue
            n = await self.files.delete_namespace(job["job_id"])
            await self.store.transition(
                "jobs", {"job_id": job["job_id"]}, Change(set={"files_deleted": True, "outputs": []})
            )
            LOGGER.info("job %s: retention over, %d file(s) deleted", job["job_id"], n)
        return len(old) == BATCH
