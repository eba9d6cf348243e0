"""What handlers and loops share, built once in server.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .auth import Authenticator
from .config import Config
from .loops.base import LoopState
from .ops.fair_share import FairShare
from .query_limits import QueryLimits
from .quotas import QuotaGate, Quotas
from .schema import OpenAPI
from .secrets_box import SecretsBox
from .storage.base import Storage
from .storage.files_base import FileStore
from .views import Views

if TYPE_CHECKING:
    from .broker.health import BrokerHealth
    from .metrics import ServerMetrics
    from .progress_cache import ProgressCache
    from .webhooks.outbox import Notifier


@dataclass(frozen=True)
class Deps:
    cfg: Config
    store: Storage
    schema: OpenAPI
    auth: Authenticator
    loops: dict[str, LoopState] = field(default_factory=dict)
    query_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    query_limits: QueryLimits = field(default_factory=lambda: QueryLimits(8, 2000, 5000, 5.0))
    progress: ProgressCache | None = None
    metrics: ServerMetrics | None = None
    """None when EWMS_METRICS_ENABLED=false."""
    quotas: QuotaGate = field(default_factory=lambda: QuotaGate(Quotas()))
    broker_health: BrokerHealth | None = None
    """None: no broker is configured (EWMS_BROKER_URL unset)."""
    fair_share: FairShare | None = None
    """Orders pending-starter by users' workers against their shares (None: priority only)."""
    notifier: Notifier | None = None
    """Writes webhook events to the outbox (webhooks/outbox.py)."""
    files: FileStore | None = None
    """The file cache of jobs (issue 13)."""

    @cached_property
    def views(self) -> Views:
        """Every response's documents are shaped by these (views.py)."""
        return Views(self.schema)

    @cached_property
    def secrets_box(self) -> SecretsBox | None:
        """Users' secrets' cipher and fetch tokens; None without EWMS_SECRETS_KEY."""
        key = self.cfg.secrets_key
        return SecretsBox(key) if key is not None else None

    def wake(self, name: str) -> None:
        if name in self.loops:
            self.loops[name].wake.set()
