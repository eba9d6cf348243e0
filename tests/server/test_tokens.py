"""Odd tokens: malformed claims are a clear 401 or 403 (never a 500), a TMS token acts only for
the schedds it names, and the claims' names are settings. Calls go through the security
matrix's harness (tests/server/test_security_matrix.py)."""

from __future__ import annotations

import time
from typing import Any

import jwt

from ewms_server.auth import mint_token
from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, SCHEDD, workflow_body
from tests.server.test_security_matrix import Ctx


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "ewms_role": "user", "iat": now, "exp": now + 600, **extra}


async def test_token_variants(server: RunningServer) -> None:
    ctx = Ctx(server)
    secret = server.secret
    no_exp = _claims()
    del no_exp["exp"]
    no_sub = _claims()
    del no_sub["sub"]
    cases: list[tuple[str, str | None, int, int]] = [
        # (what, Authorization header, GET /v1/ status, GET pending-starter status)
        ("alg none", "Bearer " + jwt.encode(_claims(ewms_role="admin"), "", algorithm="none"), 401, 401),
        (
            "HS512 with the right secret",
            "Bearer " + jwt.encode(_claims(), secret, algorithm="HS512"),
            401,
            401,
        ),
        ("no exp", "Bearer " + jwt.encode(no_exp, secret, algorithm="HS256"), 401, 401),
        ("no sub", "Bearer " + jwt.encode(no_sub, secret, algorithm="HS256"), 401, 401),
        ("empty sub", "Bearer " + jwt.encode(_claims(sub=""), secret, algorithm="HS256"), 401, 401),
        (
            "not yet valid",
            "Bearer " + jwt.encode(_claims(nbf=int(time.time()) + 600), secret, algorithm="HS256"),
            401,
            401,
        ),
        ("garbage", "Bearer abc.def.ghi", 401, 401),
        ("basic scheme", "Basic YWxpY2U6cHc=", 401, 401),
        ("bearer, no token", "Bearer ", 401, 401),
        ("token without scheme", str(ctx.tokens["admin"]), 401, 401),
        (
            "unknown role",
            "Bearer " + jwt.encode(_claims(ewms_role="superuser"), secret, algorithm="HS256"),
            403,
            403,
        ),
        ("no role", "Bearer " + jwt.encode(_claims(ewms_role=None), secret, algorithm="HS256"), 403, 403),
        (
            "role list: highest known wins",
            "Bearer " + jwt.encode(_claims(ewms_role=["bogus", "user", "admin"]), secret, algorithm="HS256"),
            200,
            200,
        ),
        (
            "role list of user and tms",
            "Bearer " + jwt.encode(_claims(ewms_role=["user", "system-tms"], ewms_schedds=[SCHEDD]), secret),
            200,
            200,
        ),
        ("lowercase bearer", f"bearer {ctx.tokens['tms']}", 200, 200),
        # malformed claims: a clear 401, never a 500
        ("role list of lists", "Bearer " + jwt.encode(_claims(ewms_role=[["admin"]]), secret), 401, 401),
        ("role object", "Bearer " + jwt.encode(_claims(ewms_role={"admin": True}), secret), 401, 401),
        ("role number", "Bearer " + jwt.encode(_claims(ewms_role=2), secret), 401, 401),
        (
            "schedds a number",
            "Bearer " + jwt.encode(_claims(ewms_role="system-tms", ewms_schedds=5), secret),
            401,
            401,
        ),
        (
            "schedds a list of lists",
            "Bearer " + jwt.encode(_claims(ewms_role="system-tms", ewms_schedds=[[SCHEDD]]), secret),
            401,
            401,
        ),
        # a TMS acts only for the schedds its token names
        ("tms without schedds", "Bearer " + jwt.encode(_claims(ewms_role="system-tms"), secret), 403, 403),
        (
            "tms naming none",
            "Bearer " + jwt.encode(_claims(ewms_role="system-tms", ewms_schedds=[]), secret),
            200,
            403,
        ),
        (
            "tms schedds as one string",
            "Bearer "
            + jwt.encode(_claims(ewms_role="system-tms", ewms_schedds=f"elsewhere {SCHEDD}"), secret),
            200,
            200,
        ),
        # an admin needs no schedds, and ignores any it names
        (
            "admin naming a schedd",
            "Bearer " + jwt.encode(_claims(ewms_role="admin", ewms_schedds=["x"]), secret),
            200,
            200,
        ),
    ]
    failures = []
    for what, header, main_status, tms_status in cases:
        for path, query, expected in (
            ("/v1/", None, main_status),
            ("/v1/tms/pending-starter/taskforces", {"schedd": SCHEDD}, tms_status),
        ):
            r = await ctx.call("none", "GET", path, query=query, authorization=header)
            if r.status != expected:
                failures.append(f"{what}: GET {path}: expected {expected}, got {r.status} {r.text}")
    assert not failures, "\n".join(failures)
    # the health and schema routes ignore tokens entirely, even broken ones
    for path in ("/v1/health", "/v1/schema/openapi"):
        r = await ctx.call("none", "GET", path, authorization="Bearer abc.def.ghi")
        assert r.status == 200, path
    # a [user, system-tms] token is the TMS: it may not create workflows
    both = jwt.encode(_claims(ewms_role=["user", "system-tms"], ewms_schedds=[SCHEDD]), secret)
    r = await ctx.call("none", "POST", "/v1/workflows", workflow_body(), authorization=f"Bearer {both}")
    assert r.status == 403


async def test_role_claim_is_configurable(backend: str | None) -> None:
    async with running_server(
        cluster_locations=LOCATIONS, mongodb_url=backend, env={"EWMS_AUTH_ROLE_CLAIM": "groups"}
    ) as srv:
        ctx = Ctx(srv)
        in_claim = mint_token(srv.secret, sub="alice", role="system-tms", claim="groups", schedds=[SCHEDD])
        default_claim = mint_token(srv.secret, sub="alice", role="system-tms", schedds=[SCHEDD])
        path, q = "/v1/tms/pending-stopper/taskforces", {"schedd": SCHEDD}
        assert (await ctx.call("none", "GET", path, query=q, token=in_claim)).status == 200
        assert (await ctx.call("none", "GET", path, query=q, token=default_claim)).status == 403
