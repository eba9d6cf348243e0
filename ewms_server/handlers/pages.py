"""Browser pages: the dashboard at /dashboard/ and Swagger UI at /v1/docs, both from packaged
static files (no CDN), and the dashboard's sign-in settings. The pages are public; the data
they show comes from the REST API with the user's own token."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from ..deps import Deps
from ..errors import NotFound
from ..static_files import StaticBundle
from .base import PUBLIC, BaseHandler

_COMMON_CSP = (
    "default-src 'none'; script-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def dashboard_oidc(deps: Deps) -> dict[str, str] | None:
    """The issuer and client the dashboard signs in through; None: by a pasted token only."""
    cfg = deps.cfg
    endpoints = deps.auth.oidc_endpoints() if cfg.dashboard_oidc_client_id else None
    if endpoints is None or cfg.dashboard_oidc_client_id is None:
        return None
    return {**endpoints, "client_id": cfg.dashboard_oidc_client_id, "scope": cfg.dashboard_oidc_scope}


class _StaticHandler(BaseHandler):
    BUNDLE: ClassVar[StaticBundle]
    INDEX: ClassVar[str] = "index.html"

    def initialize(self, deps: Deps) -> None:
        super().initialize(deps)
        self.set_default_headers()  # tornado set them before initialize(), without deps

    def set_default_headers(self) -> None:
        super().set_default_headers()
        if not hasattr(self, "deps"):
            return
        self.set_header("Content-Security-Policy", self.csp())
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")

    def csp(self) -> str:
        raise NotImplementedError

    async def serve(self, name: str) -> None:
        found = await self.BUNDLE.get(name or self.INDEX)
        if found is None:
            raise NotFound(f"no file {self.request.path}")
        self.set_header("Content-Type", found.content_type)
        self.set_header("Cache-Control", "no-cache")  # revalidated by its ETag: a new release shows at once
        self._etag = found.etag
        self.set_status(200)
        self.finish(found.body)  # tornado answers 304 when If-None-Match names compute_etag()

    def compute_etag(self) -> str | None:
        return getattr(self, "_etag", None)


class DashboardIDHandler(_StaticHandler):
    ROUTE = r"/dashboard/(?P<path>.*)"
    OPENAPI_PATH = "/dashboard/{path}"
    ROLES = {"GET": PUBLIC}
    BUNDLE = StaticBundle("dashboard")

    def csp(self) -> str:
        # the browser exchanges an OIDC code at the issuer's token endpoint itself (PKCE)
        oidc = dashboard_oidc(self.deps)
        token_origin = " " + _origin(oidc["token_endpoint"]) if oidc else ""
        return f"{_COMMON_CSP}; style-src 'self'; connect-src 'self'{token_origin}; form-action 'none'"

    async def get(self, path: str) -> None:
        await self.serve(path)


class DocsHandler(_StaticHandler):
    ROUTE = r"/v1/docs/?"
    OPENAPI_PATH = "/v1/docs"
    ROLES = {"GET": PUBLIC}
    BUNDLE = StaticBundle("swagger-ui")

    def csp(self) -> str:
        # Swagger UI's React views set style attributes; its scripts stay same-origin only
        return f"{_COMMON_CSP}; style-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'self'"

    async def get(self) -> None:
        await self.serve(self.INDEX)


class DocsIDHandler(DocsHandler):
    ROUTE = r"/v1/docs/(?P<asset>[^/]+)"
    OPENAPI_PATH = "/v1/docs/{asset}"

    async def get(self, asset: str) -> None:  # type: ignore[override]
        await self.serve(asset)


class DashboardConfigHandler(BaseHandler):
    ROUTE = r"/v1/dashboard/config"
    OPENAPI_PATH = "/v1/dashboard/config"
    ROLES = {"GET": PUBLIC}

    async def get(self) -> None:
        self.send({"oidc": dashboard_oidc(self.deps)})
