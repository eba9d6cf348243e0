"""The base handler: authentication, request validation from the schema, JSON in and out,
and the one table that turns domain errors into HTTP statuses."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import orjson
import tornado.web

from ..caller import Caller
from ..deps import Deps
from ..errors import EWMSError, Forbidden, Invalid, NotFound, TooLarge, Unauthenticated, Unprocessable

LOGGER = logging.getLogger("ewms_server.requests")

STATUS_OF: dict[type[EWMSError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TooLarge: 413,
    Unprocessable: 422,
}
USERS = frozenset({"user", "admin"})
TMS = frozenset({"system-tms", "admin"})
ANYONE = frozenset({"user", "admin", "system-tms"})
PUBLIC: frozenset[str] = frozenset()


class BaseHandler(tornado.web.RequestHandler):
    ROUTE: ClassVar[str]
    """The tornado regex this handler serves."""
    OPENAPI_PATH: ClassVar[str]
    """The same path in schema/openapi.json: its parameters and body validate requests."""
    ROLES: ClassVar[dict[str, frozenset[str]]] = {}
    """Method -> roles allowed; PUBLIC (empty) needs no token; an absent method is a 405."""

    deps: Deps
    caller: Caller
    query: dict[str, str]

    def initialize(self, deps: Deps) -> None:
        self.deps = deps

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def check_xsrf_cookie(self) -> None:
        return None  # bearer tokens only; no cookies

    async def prepare(self) -> None:
        method = self.request.method or "GET"
        if method not in self.ROLES:
            raise tornado.web.HTTPError(405, f"{method} is not allowed on {self.request.path}")
        roles = self.ROLES[method]
        if roles:
            self.caller = await self.deps.auth.authenticate(self.request.headers.get("Authorization"))
            if self.caller.role not in roles:
                raise Forbidden(f"role {self.caller.role!r} may not {method} {self.OPENAPI_PATH}")
        else:
            self.caller = Caller(subject="anonymous", role="none")
        if len(self.request.body) > self.deps.cfg.max_body_bytes:
            raise TooLarge(f"request body is larger than {self.deps.cfg.max_body_bytes} bytes")
        self.query = self.deps.schema.check_params(
            self.OPENAPI_PATH, method, self.path_kwargs, self.request.query_arguments
        )

    def body(self) -> dict[str, Any]:
        """The JSON body, validated against this route's request schema."""
        method = self.request.method or "GET"
        raw = self.request.body
        if not raw.strip():
            if self.deps.schema.body_required(self.OPENAPI_PATH, method):
                raise Invalid("body: a JSON object is required")
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise Invalid(f"body: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise Invalid("body: must be a JSON object")
        if not self.deps.schema.has_body(self.OPENAPI_PATH, method):
            if data:
                raise Invalid("body: must be empty or {} (this route takes no body)")
            return data
        self.deps.schema.check_body(self.OPENAPI_PATH, method, data)
        return data

    def send(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(orjson.dumps(obj))

    # -- the one place errors become responses -------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, EWMSError):
            status_code = STATUS_OF.get(type(exc), 400)
            message = str(exc)
            if isinstance(exc, Unauthenticated):
                self.set_header("WWW-Authenticate", 'Bearer realm="ewms"')
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message or self._reason
        else:
            message = "internal server error" if status_code >= 500 else self._reason
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps({"code": status_code, "error": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, EWMSError):
            LOGGER.info(
                "%s %s -> %s: %s", self.request.method, self.request.path, STATUS_OF.get(type(value)), value
            )
        else:
            super().log_exception(typ, value, tb)

    def on_finish(self) -> None:
        if self.request.method != "GET":  # every state-changing request names its subject
            LOGGER.info(
                "%s %s %d by %s",
                self.request.method,
                self.request.path,
                self.get_status(),
                getattr(self, "caller", Caller("anonymous", "none")).entity,
            )


class NotFoundHandler(BaseHandler):
    """Unknown paths: a JSON 404 like every other error."""

    OPENAPI_PATH = ""
    ROUTE = r".*"

    async def prepare(self) -> None:
        raise NotFound(f"no route {self.request.path}")
