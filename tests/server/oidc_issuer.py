"""A small OIDC issuer on loopback for the dashboard's sign-in: discovery, keys, and the
authorization code flow with PKCE (S256) for one public client. /authorize signs in
`Issuer.user` at once (no form) and sends the browser back with a code; /token checks the
code verifier against the challenge before it signs an RS256 access token."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KID = "dashboard-key"
CLIENT_ID = "ewms-dashboard"


@dataclass
class Issuer:
    url: str = ""
    user: str = "dana"
    role: str = "user"
    audience: str = "ewms"
    key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    """code -> the authorization request it answered."""
    exchanged: list[dict[str, str]] = field(default_factory=list)
    """Every successful token request's form."""

    def token(self) -> str:
        now = int(time.time())
        claims = {"sub": self.user, "ewms_role": self.role, "aud": self.audience, "iss": self.url}
        claims |= {"iat": now, "exp": now + 300}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    jwk = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
    jwk.update(kid=KID, use="sig", alg="RS256")

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/.well-known/openid-configuration":
                self._send(
                    200,
                    {
                        "issuer": issuer.url,
                        "jwks_uri": issuer.url + "/jwks",
                        "authorization_endpoint": issuer.url + "/authorize",
                        "token_endpoint": issuer.url + "/token",
                        "code_challenge_methods_supported": ["S256"],
                    },
                )
            elif parts.path == "/jwks":
                self._send(200, {"keys": [jwk]})
            elif parts.path == "/authorize":
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256":
                    self._send(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(16)
                issuer.codes[code] = q
                back = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
                self.send_response(302)
                self.send_header("Location", back)
                self.end_headers()
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            cors = {"Access-Control-Allow-Origin": self.headers.get("Origin", "*")}
            if urlsplit(self.path).path != "/token":
                self._send(404, {"error": "not found"}, cors)
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            asked = issuer.codes.pop(form.get("code", ""), None)  # a code is good once
            if (
                asked is None
                or form.get("grant_type") != "authorization_code"
                or form.get("client_id") != CLIENT_ID
                or form.get("redirect_uri") != asked["redirect_uri"]
                or _s256(form.get("code_verifier", "")) != asked["code_challenge"]
            ):
                self._send(400, {"error": "invalid_grant"}, cors)
                return
            issuer.exchanged.append(form)
            self._send(200, {"access_token": issuer.token(), "token_type": "Bearer", "expires_in": 300}, cors)

        def log_message(self, *args: Any) -> None:
            return None

    return Handler


@contextlib.contextmanager
def running_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    issuer.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        httpd.shutdown()
        httpd.server_close()


def oidc_env(issuer: Issuer, **extra: str) -> dict[str, str]:
    """A server whose tokens come from `issuer`, and whose dashboard signs in through it."""
    return {
        "EWMS_AUTH_SECRET": "",
        "EWMS_AUTH_OPENID_URL": issuer.url,
        "EWMS_AUTH_AUDIENCE": issuer.audience,
        "EWMS_DASHBOARD_OIDC_CLIENT_ID": CLIENT_ID,
        **extra,
    }
