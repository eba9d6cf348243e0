"""The base handler: admission from the headers, request validation from the schema, JSON in
and out, and the one table that turns domain errors into HTTP statuses. Bodies are streamed in
only once the headers admit the request (streaming.py)."""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

import orjson
import tornado.web

from ..auth import acts_for
from ..caller import Caller
from ..deps import Deps
from ..errors import (
    EWMSError,
    Forbidden,
    Invalid,
    NotFound,
    TooLarge,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    Unprocessable,
)
from .reason import reason_phrase
from .streaming import StreamedBodyHandler

LOGGER = logging.getLogger("ewms_server.requests")

STATUS_OF: dict[type[EWMSError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    TooLarge: 413,
    Unprocessable: 422,
    TooManyRequests: 429,
    Unavailable: 503,
}
USERS = frozenset({"user", "admin"})
TMS = frozenset({"system-tms", "admin"})
ANYONE = frozenset({"user", "admin", "system-tms"})
PUBLIC: frozenset[str] = frozenset()


_DIGITS = re.compile(r"[0-9]+")


class BaseHandler(StreamedBodyHandler):
    ROUTE: ClassVar[str]
    """The tornado regex this handler serves."""
    OPENAPI_PATH: ClassVar[str]
    """The same path in schema/openapi.json: its parameters and body validate requests."""
    ROLES: ClassVar[dict[str, frozenset[str]]] = {}
    """Method -> roles allowed; PUBLIC (empty) needs no token; an absent method is a 405."""
    MAX_BODY_SETTING: ClassVar[str] = "max_body_bytes"
    """The Config field holding the largest body this route takes (413 above)."""

    deps: Deps
    caller: Caller
    query: dict[str, str]

    def initialize(self, deps: Deps) -> None:
        self.deps = deps
        self._body_limit: int = getattr(deps.cfg, self.MAX_BODY_SETTING)
        self.start_body(self._body_limit)
        self._subject_logged = False

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def check_xsrf_cookie(self) -> None:
        return None  # bearer tokens only; no cookies

    async def admit(self) -> None:
        """Method, token, role, declared length, query parameters, then the route's own checks."""
        method = self.request.method or "GET"
        if method not in self.ROLES:
            raise tornado.web.HTTPError(405, f"{method} is not allowed on {self.request.path}")
        self.caller = await self.identify(method, self.ROLES[method])
        declared = self._declared_length()
        if declared is not None and declared > self._body_limit:
            raise TooLarge(f"request body is larger than {self._body_limit} bytes")
        self.query = self.deps.schema.check_params(
            self.OPENAPI_PATH, method, self.path_kwargs, self.request.query_arguments
        )
        await self.authorize()

    async def identify(self, method: str, roles: frozenset[str]) -> Caller:
        """Who asks, from the token (none needed when `roles` is PUBLIC); 401/403 otherwise."""
        if not roles:
            return Caller(subject="anonymous", role="none")
        caller = self.caller = await self.deps.auth.authenticate(self.request.headers.get("Authorization"))
        if caller.role not in roles:  # the log line of the refusal names who asked
            raise Forbidden(f"role {caller.role!r} may not {method} {self.OPENAPI_PATH}")
        self.deps.auth.check_schedds_claim(caller)
        return caller

    async def authorize(self) -> None:
        """Route-specific checks that may need the database; still before the body is read."""

    def require_schedd(self, schedd: str, refusal: str) -> None:
        """403 (saying `refusal`) unless the caller is an admin or a TMS naming `schedd`."""
        if not acts_for(self.caller, schedd):
            raise Forbidden(refusal)

    def _declared_length(self) -> int | None:
        raw = self.request.headers.get("Content-Length")
        if raw is None:
            return None
        values = {v.strip() for v in raw.split(",")}
        value = values.pop() if len(values) == 1 else ""
        if not _DIGITS.fullmatch(value):
            raise Invalid("header Content-Length: not a number")
        return int(value) if len(value) <= 18 else self._body_limit + 1

    def body(self) -> dict[str, Any]:
        """The JSON body, validated against this route's request schema."""
        method = self.request.method or "GET"
        raw = self.raw_body
        if not raw or raw.isspace():
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
        self.finish(self.error_response(status_code, kwargs.get("exc_info", (None, None, None))[1]))

    def error_response(self, status_code: int, exc: BaseException | None) -> bytes:
        """Set the status and headers of an error response; return its body."""
        if isinstance(exc, EWMSError):
            status_code = STATUS_OF.get(type(exc), 400)
            message = str(exc)
            if isinstance(exc, Unauthenticated):
                self.set_header("WWW-Authenticate", 'Bearer realm="ewms"')
            if isinstance(exc, TooManyRequests):
                self.set_header("Retry-After", str(exc.retry_after))
        elif isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message or self._reason
        else:
            message = "internal server error" if status_code >= 500 else self._reason
        self.set_status(status_code, reason_phrase(message))  # EWMS's clients print the reason
        self.set_header("Content-Type", "application/json")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.ROLES))
        return orjson.dumps({"code": status_code, "error": message})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, EWMSError):
            LOGGER.info(
                "%s %s -> %s: %s", self.request.method, self.request.path, STATUS_OF.get(type(value)), value
            )
        else:
            super().log_exception(typ, value, tb)

    def on_answered(self) -> None:
        if self.request.method != "GET" and not self._subject_logged:  # state changes name who asked
            self._subject_logged = True
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

    async def admit(self) -> None:
        raise NotFound(f"no route {self.request.path}")
