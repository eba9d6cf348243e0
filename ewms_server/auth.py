"""Bearer-token authentication: local HS256 secret (development, tests) or an OIDC issuer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from .caller import Caller
from .config import Config
from .errors import Forbidden, Unauthenticated

ROLES = ("user", "admin", "system-tms")
_RANK = {"user": 0, "system-tms": 1, "admin": 2}
LOGGER = logging.getLogger("ewms_server.auth")


@dataclass(frozen=True)
class TMSCaller(Caller):
    """A system-tms token: it acts only for the schedds it names. `None` is a legacy token
    without the claim (every schedd), accepted only with EWMS_AUTH_ALLOW_UNSCOPED_TMS."""

    schedds: frozenset[str] | None = None

    def scope(self) -> dict[str, Any]:
        # reads see only this TMS's taskforces: another schedd's is a 404, as another user's
        # object is to a user (the TMS reads nothing but taskforces)
        return {} if self.schedds is None else {"schedd": {"$in": sorted(self.schedds)}}


def acts_for(caller: Caller, schedd: str) -> bool:
    """May `caller` act as the TMS of `schedd`? An admin may; a TMS for the schedds it names."""
    if caller.role == "admin":
        return True
    return isinstance(caller, TMSCaller) and (caller.schedds is None or schedd in caller.schedds)


def mint_token(
    secret: str,
    *,
    sub: str,
    role: str,
    expires_s: float = 3600,
    claim: str = "ewms_role",
    schedds: Iterable[str] | None = None,
    schedds_claim: str = "ewms_schedds",
) -> str:
    """A signed token; `schedds` (for role system-tms) names the schedds it acts for."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, claim: role, "iat": now, "exp": now + int(expires_s)}
    if schedds is not None:
        claims[schedds_claim] = sorted(set(schedds))
    return jwt.encode(claims, secret, algorithm="HS256")


def mint_for(
    cfg: Config,
    *,
    sub: str,
    role: str,
    expires_s: float,
    schedds: Iterable[str] | None = None,
    secret: str | None = None,
) -> str:
    """A token with this server's claim names, signed with its local secret (or `secret`); a
    system-tms one acts for `schedds`, by default every schedd of its cluster locations."""
    if role == "system-tms" and schedds is None:
        schedds = [loc.schedd for loc in cfg.cluster_locations.values()]
    return mint_token(
        secret or cfg.auth_secret or "",
        sub=sub,
        role=role,
        expires_s=expires_s,
        claim=cfg.auth_role_claim,
        schedds=schedds if role == "system-tms" else None,
        schedds_claim=cfg.auth_schedds_claim,
    )


class Authenticator:
    """Turns an Authorization header into a Caller; verified tokens are cached until expiry."""

    CACHE_SIZE = 4096
    KEY_REFRESH_S = 60.0

    def __init__(self, cfg: Config) -> None:
        self._secret = cfg.auth_secret
        self._claim = cfg.auth_role_claim
        self._schedds_claim = cfg.auth_schedds_claim
        self._allow_unscoped_tms = cfg.auth_allow_unscoped_tms
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
        # a token -> its Caller, or why it is refused; and until when
        self._cache: OrderedDict[str, tuple[Caller | str, float]] = OrderedDict()

    def oidc_endpoints(self) -> dict[str, str] | None:
        """The issuer's authorization and token endpoints, from its discovery document
        (fetched at start); None without an issuer or when discovery did not name them."""
        info = getattr(self._oidc, "provider_info", None) or {}
        out = {k: info.get(k) for k in ("issuer", "authorization_endpoint", "token_endpoint")}
        if not all(isinstance(v, str) and v for v in out.values()):
            return None
        return {k: str(v) for k, v in out.items()}

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
            outcome = hit[0]
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
            try:
                outcome = self._caller(claims)
            except Unauthenticated as e:
                outcome = str(e)
            exp = claims.get("exp")
            self._cache[token] = (outcome, float(exp) if isinstance(exp, (int, float)) else now + 60)
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        if isinstance(outcome, str):
            raise Unauthenticated(outcome)
        return outcome

    def check_schedds_claim(self, caller: Caller) -> None:
        """A system-tms token must name its schedds, unless unscoped ones are allowed (legacy)."""
        if isinstance(caller, TMSCaller) and caller.schedds is None and not self._allow_unscoped_tms:
            raise Forbidden(
                f"this system-tms token names no schedds (claim {self._schedds_claim!r}); mint one "
                "with `ewms-server mint-token --role system-tms --schedd NAME`, or allow unscoped "
                "TMS tokens with EWMS_AUTH_ALLOW_UNSCOPED_TMS=true"
            )

    def _caller(self, claims: dict[str, Any]) -> Caller:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthenticated("token has no subject")
        role = self._role(claims.get(self._claim))
        if role != "system-tms":
            return Caller(subject=sub, role=role)
        return TMSCaller(subject=sub, role=role, schedds=self._schedds(claims))

    def _role(self, raw: Any) -> str:
        """The highest known role in the claim; 'none' (a 403) when it names none."""
        values = raw if isinstance(raw, list) else [raw]
        if not all(v is None or isinstance(v, str) for v in values):
            raise Unauthenticated(f"token claim {self._claim!r} must be a role name or a list of role names")
        known = [v for v in values if v in _RANK]
        return max(known, key=_RANK.__getitem__) if known else "none"

    def _schedds(self, claims: dict[str, Any]) -> frozenset[str] | None:
        if self._schedds_claim not in claims:
            return None
        raw = claims[self._schedds_claim]
        names = raw.replace(",", " ").split() if isinstance(raw, str) else raw
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise Unauthenticated(f"token claim {self._schedds_claim!r} must be a list of schedd names")
        return frozenset(names)
