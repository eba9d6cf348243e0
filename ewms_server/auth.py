"""Bearer-token authentication: local HS256 secret (development, tests) or an OIDC issuer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import jwt

from .caller import Caller
from .config import Config
from .errors import Unauthenticated

ROLES = ("user", "admin", "system-tms")
_RANK = {"user": 0, "system-tms": 1, "admin": 2}
LOGGER = logging.getLogger("ewms_server.auth")


def mint_token(secret: str, *, sub: str, role: str, expires_s: float = 3600, claim: str = "ewms_role") -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, claim: role, "iat": now, "exp": now + int(expires_s)}, secret, algorithm="HS256"
    )


class Authenticator:
    """Turns an Authorization header into a Caller; verified tokens are cached until expiry."""

    CACHE_SIZE = 4096
    KEY_REFRESH_S = 60.0

    def __init__(self, cfg: Config) -> None:
        self._secret = cfg.auth_secret
        self._claim = cfg.auth_role_claim
        self._audience = cfg.auth_audience
        self._oidc: Any = None
        self._last_refresh = 0.0
        if cfg.auth_openid_url and not self._secret:
            from rest_tools.utils.auth import OpenIDAuth

            issuer = cfg.auth_openid_url.rstrip("/")
            # discovery and key download happen here, once, before the server listens
            self._oidc = OpenIDAuth(
                cfg.auth_openid_url, audience=cfg.auth_audience, issuers=[issuer, issuer + "/"]
            )
            self._last_refresh = time.monotonic()
        self._cache: OrderedDict[str, tuple[Caller | None, float]] = OrderedDict()

    def _decode(self, token: str) -> dict[str, Any]:
        if self._secret:
            return jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
                audience=self._audience,
            )
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self._oidc.public_keys:
            # an unknown key makes rest_tools fetch the issuer's keys: at most once a minute,
            # or anyone could keep the server busy downloading them
            if time.monotonic() - self._last_refresh < self.KEY_REFRESH_S:
                raise jwt.InvalidKeyError(f"unknown signing key {kid!r}")
            self._last_refresh = time.monotonic()
        return dict(self._oidc.validate(token))

    async def authenticate(self, header: str | None) -> Caller:
        if not header:
            raise Unauthenticated("missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("expected 'Authorization: Bearer <token>'")
        token = token.strip()
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            self._cache.move_to_end(token)
            caller = hit[0]
        else:
            try:
                if self._oidc is None:
                    claims = self._decode(token)
                else:  # may download keys: never on the event loop
                    claims = await asyncio.to_thread(self._decode, token)
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("token expired") from None
            except Exception as e:  # any other decoding/verification failure
                raise Unauthenticated(f"invalid token: {type(e).__name__}") from None
            caller = self._caller(claims)
            self._cache[token] = (caller, float(claims.get("exp", now + 60)))
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        if caller is None:
            raise Unauthenticated("token has no subject")
        return caller

    def _caller(self, claims: dict[str, Any]) -> Caller | None:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            return None
        raw = claims.get(self._claim)
        values = raw if isinstance(raw, list) else [raw]
        known = [v for v in values if v in _RANK]
        role = max(known, key=_RANK.__getitem__) if known else "none"
        return Caller(subject=sub, role=role)
