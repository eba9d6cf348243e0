"""Production auth: tokens from an OIDC issuer (discovery + JWKS on loopback, RS256)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from tornado.httpclient import AsyncHTTPClient

from ewms_server.testing import RunningServer, running_server

KID = "key-1"


@pytest.fixture(scope="module")
def issuer() -> Iterator[dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=KID, use="sig", alg="RS256")
    hits = {"jwks": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": base, "jwks_uri": base + "/jwks", "token_endpoint": base + "/token"}
            elif self.path == "/jwks":
                hits["jwks"] += 1
                body = {"keys": [jwk]}
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield {"url": url, "key": key, "hits": hits}
    finally:
        httpd.shutdown()
        httpd.server_close()


def token(
    issuer: dict[str, Any],
    *,
    kid: str = KID,
    aud: str = "ewms",
    iss: str | None = None,
    role: str = "user",
    exp: float = 300,
    **extra: Any,
) -> str:
    now = int(time.time())
    claims = {
        "sub": "dana",
        "ewms_role": role,
        "aud": aud,
        "iss": iss or issuer["url"],
        "iat": now,
        "exp": now + int(exp),
        **extra,
    }
    return jwt.encode(claims, issuer["key"], algorithm="RS256", headers={"kid": kid})


async def test_oidc_tokens(issuer: dict[str, Any]) -> None:
    async with running_server(env=oidc_env(issuer)) as srv:

        async def status(tok: str) -> int:
            resp = await AsyncHTTPClient().fetch(
                srv.url + "/v1/", headers={"Authorization": f"Bearer {tok}"}, raise_error=False
            )
            return resp.code

        assert await status(token(issuer)) == 200
        assert await status(token(issuer, role="system-tms", ewms_schedds=["test-schedd"])) == 200
        assert await status(token(issuer, role="system-tms")) == 403  # names no schedds
        assert await status(token(issuer, aud="other")) == 401
        assert await status(token(issuer, iss="http://evil.example")) == 401
        assert await status(token(issuer, exp=-120)) == 401
        # a secret-signed token is not accepted when an issuer is configured
        assert (
            await status(
                jwt.encode(
                    {"sub": "x", "ewms_role": "admin", "exp": time.time() + 60}, "s" * 40, algorithm="HS256"
                )
            )
            == 401
        )
        # unknown key ids: at most one key download a minute, however many such tokens come
        before = issuer["hits"]["jwks"]
        for i in range(5):
            assert await status(token(issuer, kid=f"nope-{i}")) == 401
        assert issuer["hits"]["jwks"] - before <= 1


def oidc_env(issuer: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "EWMS_AUTH_SECRET": "",
        "EWMS_AUTH_OPENID_URL": issuer["url"],
        "EWMS_AUTH_AUDIENCE": "ewms",
        **extra,
    }


async def pending_starter(srv: RunningServer, tok: str, schedd: str) -> int:
    resp = await AsyncHTTPClient().fetch(
        f"{srv.url}/v1/tms/pending-starter/taskforces?schedd={schedd}",
        headers={"Authorization": f"Bearer {tok}"},
        raise_error=False,
    )
    return resp.code


async def test_oidc_schedds_claim_is_configurable(issuer: dict[str, Any]) -> None:
    """An issuer that writes the schedds into its own claim, as one space-separated string."""
    async with running_server(env=oidc_env(issuer, EWMS_AUTH_SCHEDDS_CLAIM="condor_aps")) as srv:
        tms = token(issuer, role="system-tms", condor_aps="ap1.example ap2.example")
        assert await pending_starter(srv, tms, "ap1.example") == 200
        assert await pending_starter(srv, tms, "ap2.example") == 200
        assert await pending_starter(srv, tms, "ap3.example") == 403
        # the default claim name means nothing to this server
        other = token(issuer, role="system-tms", ewms_schedds=["ap3.example"])
        assert await pending_starter(srv, other, "ap3.example") == 403


async def test_oidc_unscoped_tms_tokens_with_the_legacy_setting(issuer: dict[str, Any]) -> None:
    async with running_server(env=oidc_env(issuer, EWMS_AUTH_ALLOW_UNSCOPED_TMS="true")) as srv:
        assert await pending_starter(srv, token(issuer, role="system-tms"), "anywhere") == 200
