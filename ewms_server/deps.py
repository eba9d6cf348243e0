"""What handlers and loops share, built once in server.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .auth import Authenticator
from .config import Config
from .loops.base import LoopState
from .query_limits import QueryLimits
from .quotas import QuotaGate, Quotas
from .schema import OpenAPI
from .storage.base import Storage
from .storage.files_base import FileStore
from .views import Views

if TYPE_CHECKING:
    from .metrics import ServerMetrics
    from .progress_cache import ProgressCache


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
    files: FileStore | None = None
    """The file cache of jobs (issue 13)."""

    @cached_property
    def views(self) -> Views:
        """Every response's documents are shaped by these (views.py)."""
        return Views(self.schema)

    def wake(self, name: str) -> None:
        if name in self.loops:
            self.loops[name].wake.set()
