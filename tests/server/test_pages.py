"""The browser pages over HTTP: security headers, only packaged files served, caching, the
sign-in settings, and the files really shipped by a build of the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from ewms_server import static_files
from ewms_server.testing import RunningServer, running_server
from tests.server.oidc_issuer import CLIENT_ID, oidc_env, running_issuer

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "ewms_server" / "static"


async def get(srv: RunningServer, path: str, **headers: str) -> HTTPResponse:
    return await AsyncHTTPClient().fetch(srv.url + path, headers=headers, raise_error=False)


def _csp(r: HTTPResponse) -> dict[str, list[str]]:
    out = {}
    for part in r.headers["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        out[name] = values
    return out


async def test_dashboard_files_and_their_headers(server: RunningServer) -> None:
    for path, ctype in (
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/views/workflow.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ):
        r = await get(server, path)
        assert r.code == 200 and r.headers["Content-Type"].startswith(ctype), path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        csp = _csp(r)
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]  # nothing inline
        assert csp["default-src"] == ["'none'"] and csp["connect-src"] == ["'self'"]
    index = (await get(server, "/dashboard/")).body
    assert index == (STATIC / "dashboard" / "index.html").read_bytes()


async def test_only_packaged_files_are_served(server: RunningServer) -> None:
    for path in (
        "/dashboard/nope.js",
        "/dashboard/../config.py",
        "/dashboard/%2e%2e/static_files.py",
        "/dashboard/..%2fstatic_files.py",
        "/dashboard//etc/passwd",
        "/v1/docs/swagger-ui.css.map",  # not shipped
        "/v1/docs/README.md",  # shipped for people, not served
    ):
        r = await get(server, path)
        assert r.code in (404, 400), path
        assert json.loads(r.body)["code"] == r.code and r.headers["Content-Type"] == "application/json", path


async def test_unchanged_files_are_revalidated_by_etag(server: RunningServer) -> None:
    first = await get(server, "/v1/docs/swagger-ui-bundle.js")
    assert first.code == 200 and first.headers["Cache-Control"] == "no-cache"
    again = await get(server, "/v1/docs/swagger-ui-bundle.js", **{"If-None-Match": first.headers["Etag"]})
    assert again.code == 304 and not again.body


async def test_swagger_ui_page(server: RunningServer) -> None:
    r = await get(server, "/v1/docs")
    assert r.code == 200 and b"/v1/docs/swagger-ui-bundle.js" in r.body
    assert _csp(r)["script-src"] == ["'self'"]
    assert (await get(server, "/v1/docs/")).body == r.body
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "init.js", "LICENSE", "NOTICE"):
        assert (await get(server, f"/v1/docs/{asset}")).code == 200, asset


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.problems += [f"<{tag} {k}=...>" for k in names if k.startswith("on")]
        self.problems += [f"<{tag} style=...>" for k in names if k == "style"]
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("<script> without src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("inline script")


@pytest.mark.parametrize("page", ["dashboard/index.html", "swagger-ui/index.html"])
def test_pages_have_no_inline_script_or_style(page: str) -> None:
    parser = _Scripts()
    parser.feed((STATIC / page).read_text())
    assert parser.problems == []


async def test_sign_in_settings() -> None:
    # a local secret: a pasted token only
    async with running_server() as srv:
        assert json.loads((await get(srv, "/v1/dashboard/config")).body) == {"oidc": None}
    with running_issuer() as issuer:
        # an issuer without a dashboard client: still a pasted token
        async with running_server(env=oidc_env(issuer, EWMS_DASHBOARD_OIDC_CLIENT_ID="")) as srv:
            assert json.loads((await get(srv, "/v1/dashboard/config")).body) == {"oidc": None}
        async with running_server(env=oidc_env(issuer, EWMS_DASHBOARD_OIDC_SCOPE="openid profile")) as srv:
            assert json.loads((await get(srv, "/v1/dashboard/config")).body) == {
                "oidc": {
                    "issuer": issuer.url,
                    "authorization_endpoint": issuer.url + "/authorize",
                    "token_endpoint": issuer.url + "/token",
                    "client_id": CLIENT_ID,
                    "scope": "openid profile",
                }
            }
            # the page may call the issuer's token endpoint, and nothing else outside
            assert _csp(await get(srv, "/dashboard/"))["connect-src"] == ["'self'", issuer.url]


def test_a_build_of_the_package_ships_every_file(tmp_path: Path) -> None:
    """setup.cfg's package_data: setuptools' build_py (what a wheel is made of) copies every
    served file, and the built package finds them through importlib.resources."""
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("ewms_server", "tms", "ewms_pilot", "ewms_client", "schema"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import setup; setup()",
            "-q",
            "build_py",
            "--build-lib",
            str(out),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    probe = "import json, sys; from ewms_server import static_files as s; print(json.dumps({b: sorted(s.load(b)) for b in sys.argv[1:]}))"
    env = {**os.environ, "PYTHONPATH": str(out)}
    shipped = subprocess.run(
        [sys.executable, "-c", probe, "dashboard", "swagger-ui"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert json.loads(shipped.stdout) == {
        b: sorted(static_files.load(b)) for b in ("dashboard", "swagger-ui")
    }
    assert {"index.html", "app.js", "views/workflow.js"} <= set(static_files.load("dashboard"))
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"} <= set(static_files.load("swagger-ui"))
