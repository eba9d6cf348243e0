"""The server's quarantine, as this TMS applies it: machines new submits exclude, and machines
whose pilots the backend sends away (``Backend.set_quarantine``)."""

from __future__ import annotations

import logging
import time

from .backends.base import Backend, BackendError
from .client import ServerRejected, TmsClient

LOGGER = logging.getLogger(__name__)


class QuarantineView:
    """The quarantined machines of this schedd's locations, re-read at most every ``interval``."""

    def __init__(self, client: TmsClient, backend: Backend, schedd: str, interval: float) -> None:
        self.client = client
        self.backend = backend
        self.schedd = schedd
        self.interval = interval
        self.machines: set[str] = set()
        self._read_at = -float("inf")

    async def refresh(self, force: bool = False) -> set[str]:
        """Read the entries when due and hand them to the backend; the last known set."""
        if not force and time.monotonic() - self._read_at < self.interval:
            return self.machines
        self._read_at = time.monotonic()
        try:
            entries = await self.client.quarantine(self.schedd)
        except ServerRejected as e:  # an older server without the route: nothing quarantined
            LOGGER.debug("quarantine not read: %s", e)
            return self.machines
        machines = {str(e["machine"]) for e in entries}
        if machines != self.machines:
            LOGGER.info("quarantined machines: %s", ", ".join(sorted(machines)) or "none")
        try:
            await self.backend.set_quarantine(machines)
        except BackendError as e:
            LOGGER.warning("could not apply the quarantine: %s", e)
        self.machines = machines
        return machines
