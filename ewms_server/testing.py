"""Run a real server on loopback inside the caller's event loop (tests, benchmarks, demos)."""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .auth import mint_for
from .broker.base import BrokerAdapter
from .config import Config
from .secrets_box import new_key_text
from .server import Server


@dataclass
class RunningServer:
    server: Server
    secret: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def deps(self) -> Any:
        return self.server.deps

    def token(
        self,
        *,
        role: str = "user",
        sub: str = "alice",
        expires_s: float = 3600,
        schedds: Iterable[str] | None = None,
    ) -> str:
        """A token of this server; a system-tms one names `schedds`, by default every schedd
        of the server's cluster locations."""
        cfg = self.server.cfg
        return mint_for(cfg, sub=sub, role=role, expires_s=expires_s, schedds=schedds, secret=self.secret)


@contextlib.asynccontextmanager
async def running_server(
    *,
    cluster_locations: Mapping[str, Any] | None = None,
    mongodb_url: str | None = None,
    broker: BrokerAdapter | None = None,
    broker_env: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningServer]:
    """A server on 127.0.0.1 and a free port, with a random signing secret. `mongodb_url`:
    a MongoDB URL, "mongomock://" (motor's code path on mongomock), or None for SQLite (in a
    temporary EWMS_DATA_DIR unless `env` names one)."""
    secret = secrets.token_urlsafe(48)
    full_env = {
        "EWMS_REST_HOST": "127.0.0.1",
        "EWMS_REST_PORT": "0",
        "EWMS_AUTH_SECRET": secret,
        "EWMS_SECRETS_KEY": new_key_text(),  # env={"EWMS_SECRETS_KEY": ""} turns secrets off
        "EWMS_CLUSTER_LOCATIONS": json.dumps(dict(cluster_locations or {"local": "test-schedd"})),
        **({"EWMS_MONGODB_URL": mongodb_url} if mongodb_url else {}),
        **dict(broker_env or {}),
        **dict(env or {}),
    }
    with contextlib.ExitStack() as cleanup:
        storage = None
        if mongodb_url == "mongomock://":  # the motor code path, in memory (tests only)
            from mongomock_motor import AsyncMongoMockClient

            from .storage.mongodb import MongoStorage

            storage = MongoStorage(AsyncMongoMockClient(), full_env.get("EWMS_MONGODB_DB", "ewms"))
            del full_env["EWMS_MONGODB_URL"]
        elif not mongodb_url and "EWMS_DATA_DIR" not in full_env:  # SQLite in a fresh directory
            full_env["EWMS_DATA_DIR"] = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ewms-"))
        server = Server(Config.from_env(full_env), broker=broker, storage=storage)
        await server.start()
        try:
            yield RunningServer(server, secret)
        finally:
            await server.stop()
