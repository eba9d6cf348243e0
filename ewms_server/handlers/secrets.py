"""Routes under /v1/secrets (a user's own secrets) and /v1/pilot/secrets (a pilot fetching
its task's values with a secrets fetch token). No response but the pilot's carries a value,
and no error message quotes one."""

from __future__ import annotations

import orjson

from ..errors import Invalid, Unauthenticated, Unavailable
from ..ops import secrets as ops
from ..secrets_box import KEY_NAME, SecretsBox
from .base import PUBLIC, USERS, BaseHandler

NO_KEY = "secrets are switched off: the server has no EWMS_SECRETS_KEY (see ewms-server --help)"


class _SecretsHandler(BaseHandler):
    """Refused before the body is read when the server has no key."""

    box: SecretsBox

    async def authorize(self) -> None:
        box = self.deps.secrets_box
        if box is None:
            raise Unavailable(NO_KEY)
        self.box = box
        key = self.path_kwargs.get("key")
        if key is not None and not KEY_NAME.fullmatch(key):
            raise Invalid(f"path.key: must match ^{KEY_NAME.pattern}$")


class SecretsHandler(_SecretsHandler):
    ROUTE = r"/v1/secrets"
    OPENAPI_PATH = "/v1/secrets"
    ROLES = {"GET": USERS}

    async def get(self) -> None:
        self.send({"secrets": await ops.listing(self.deps.store, self.caller.subject)})


class SecretsIDHandler(_SecretsHandler):
    ROUTE = r"/v1/secrets/(?P<key>[^/]+)"
    OPENAPI_PATH = "/v1/secrets/{key}"
    ROLES = {"PUT": USERS, "DELETE": USERS}

    async def put(self, key: str) -> None:
        cfg = self.deps.cfg
        value = self._value(cfg.secrets_max_value_bytes)
        shown = await ops.put(
            self.deps.store, self.box, self.caller.subject, key, value, max_per_user=cfg.secrets_max_per_user
        )
        self.send(shown)

    async def delete(self, key: str) -> None:
        self.body()
        self.send(await ops.delete(self.deps.store, self.caller.subject, key))

    def _value(self, max_bytes: int) -> str:
        """The body's value, checked here so that no message quotes it (the schema's would)."""
        try:
            data = orjson.loads(self.raw_body or b"")
        except orjson.JSONDecodeError:
            raise Invalid("body: not valid JSON") from None
        if not isinstance(data, dict) or set(data) != {"value"}:
            raise Invalid('body: must be {"value": "<text>"} and nothing else')
        value = data["value"]
        if not isinstance(value, str):
            raise Invalid("body.value: must be a string")
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise Invalid(f"body.value: {size} bytes, more than EWMS_SECRETS_MAX_VALUE_BYTES ({max_bytes})")
        return value


class PilotSecretsHandler(BaseHandler):
    ROUTE = r"/v1/pilot/secrets"
    OPENAPI_PATH = "/v1/pilot/secrets"
    ROLES = {"GET": PUBLIC}  # not a JWT: a secrets fetch token, checked here

    taskforce_uuid: str
    box: SecretsBox

    async def authorize(self) -> None:
        box = self.deps.secrets_box
        if box is None:
            raise Unavailable(NO_KEY)
        scheme, _, token = (self.request.headers.get("Authorization") or "").partition(" ")
        uuid = box.taskforce_of(token) if scheme.lower() == "bearer" and token.strip() else None
        if uuid is None:
            raise Unauthenticated("expected 'Authorization: Bearer <secrets fetch token>'")
        self.box, self.taskforce_uuid = box, uuid

    async def get(self) -> None:
        values = await ops.for_taskforce(self.deps.store, self.box, self.taskforce_uuid)
        self.set_header("Cache-Control", "no-store")
        self.send({"secrets": values})
