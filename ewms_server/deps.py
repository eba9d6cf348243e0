"""What handlers and loops share, built once in server.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from .auth import Authenticator
from .config import Config
from .database.store import Store
from .loops.base import LoopState
from .schema import OpenAPI


@dataclass(frozen=True)
class Deps:
    cfg: Config
    store: Store
    schema: OpenAPI
    auth: Authenticator
    loops: dict[str, LoopState] = field(default_factory=dict)
    query_fields: dict[str, frozenset[str]] = field(default_factory=dict)

    def wake(self, name: str) -> None:
        if name in self.loops:
            self.loops[name].wake.set()
