"""What handlers and loops share, built once in server.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from .auth import Authenticator
from .config import Config
from .loops.base import LoopState
from .query_limits import QueryLimits
from .schema import OpenAPI
from .storage.base import Storage


@dataclass(frozen=True)
class Deps:
    cfg: Config
    store: Storage
    schema: OpenAPI
    auth: Authenticator
    loops: dict[str, LoopState] = field(default_factory=dict)
    query_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    query_limits: QueryLimits = field(default_factory=lambda: QueryLimits(8, 2000, 5000, 5.0))

    def wake(self, name: str) -> None:
        if name in self.loops:
            self.loops[name].wake.set()
