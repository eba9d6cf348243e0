"""/v1/secrets and /v1/pilot/secrets on a real server, on both stores: owner scoping, key
names, bodies, the server without EWMS_SECRETS_KEY, values never in a response nor an error,
encryption at rest, the quota, and the fetch token's life (issued with pending-starter,
revoked when the workflow ends)."""

from __future__ import annotations

import glob
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from ewms_server.secrets_box import SecretsBox, new_key_text, parse_key
from ewms_server.testing import RunningServer, running_server
from tests.conftest import LOCATIONS, SCHEDD, wait_until, workflow_body

BAD_KEYS = ("1abc", "a-b", "a.b", "x" * 65, "%C3%A4", "a%20b")


@dataclass
class Api:
    """Calls the server as a user; keeps every answer, to look for values in them."""

    srv: RunningServer
    seen: list[str] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        sub: str = "alice",
        role: str = "user",
        token: str = "",
    ) -> tuple[int, Any]:
        tok = token or self.srv.token(role=role, sub=sub)
        raw = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        r = await AsyncHTTPClient().fetch(
            self.srv.url + path,
            method=method,
            body=raw,
            headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"},
            raise_error=False,
            allow_nonstandard_methods=True,
        )
        text = r.body.decode() if r.body else ""
        self.seen.append(f"{r.code} {dict(r.headers)} {text}")
        return r.code, json.loads(text) if text else None

    def leaked(self, value: str) -> list[str]:
        return [s for s in self.seen if value in s]


@pytest.fixture
async def srv(backend: str | None, tmp_path: Any) -> AsyncIterator[RunningServer]:
    env = {"EWMS_LOOP_INTERVAL_S": "0.05", "EWMS_SECRETS_MAX_PER_USER": "5"}
    if backend is None:
        env["EWMS_DATA_DIR"] = str(tmp_path)
    async with running_server(cluster_locations=LOCATIONS, mongodb_url=backend, env=env) as s:
        yield s


def _value() -> str:
    return f"v4lue-{secrets.token_hex(16)}"


async def test_owner_scoping(srv: RunningServer) -> None:
    api = Api(srv)
    alice_v, bob_v = _value(), _value()
    code, shown = await api.call("PUT", "/v1/secrets/TOKEN", {"value": alice_v})
    assert code == 200 and shown["key"] == "TOKEN" and set(shown) == {"key", "created_ts", "updated_ts"}
    assert (await api.call("GET", "/v1/secrets", sub="bob")) == (200, {"secrets": []})
    assert (await api.call("GET", "/v1/secrets", sub="root", role="admin")) == (200, {"secrets": []})
    for sub, role in (("bob", "user"), ("root", "admin")):  # another's secret is a 404, even to an admin
        code, err = await api.call("DELETE", "/v1/secrets/TOKEN", sub=sub, role=role)
        assert code == 404 and "no secret 'TOKEN'" in err["error"]
    # bob's own TOKEN is another secret: alice's stays hers, with her value
    assert (await api.call("PUT", "/v1/secrets/TOKEN", {"value": bob_v}, sub="bob"))[0] == 200
    box = srv.deps.secrets_box
    assert box is not None
    for owner, value in (("alice", alice_v), ("bob", bob_v)):
        doc = await srv.deps.store.get("secrets", {"owner": owner, "key": "TOKEN"})
        assert doc is not None and box.decrypt(owner, "TOKEN", doc["ciphertext"]) == value
        assert value not in json.dumps(doc)  # on either store: only the ciphertext
    code, listed = await api.call("GET", "/v1/secrets")
    assert code == 200 and [s["key"] for s in listed["secrets"]] == ["TOKEN"]
    # replace, then delete: alice's goes, bob's stays
    code, again = await api.call("PUT", "/v1/secrets/TOKEN", {"value": _value()})
    assert code == 200 and again["created_ts"] == shown["created_ts"] < again["updated_ts"]
    assert (await api.call("DELETE", "/v1/secrets/TOKEN"))[0] == 200
    assert (await api.call("DELETE", "/v1/secrets/TOKEN"))[0] == 404
    assert (await api.call("GET", "/v1/secrets"))[1] == {"secrets": []}
    assert [s["key"] for s in (await api.call("GET", "/v1/secrets", sub="bob"))[1]["secrets"]] == ["TOKEN"]
    assert not api.leaked(alice_v) and not api.leaked(bob_v)


async def test_bad_keys_and_bodies_are_400_and_never_quote_the_value(srv: RunningServer) -> None:
    api = Api(srv)
    value = _value()
    for key in BAD_KEYS:
        for method in ("PUT", "DELETE"):
            code, err = await api.call(
                method, f"/v1/secrets/{key}", {"value": value} if method == "PUT" else None
            )
            assert code == 400 and "path.key" in err["error"], (key, method, err)
    big = value + "x" * 70_000
    for body in (
        {"value": 5},
        {"value": [value]},
        {"value": value, "extra": value},
        {"valu": value},
        [value],
        {"value": big},
        b'{"value": "' + value.encode() + b'"',  # cut short: not JSON
    ):
        code, err = await api.call("PUT", "/v1/secrets/GOOD", body)
        assert code == 400, (body, err)
    assert await srv.deps.store.count("secrets", {}) == 0  # nothing stored
    assert not api.leaked(value)


async def test_quota(srv: RunningServer) -> None:
    api = Api(srv)
    for i in range(5):
        assert (await api.call("PUT", f"/v1/secrets/K{i}", {"value": "v"}))[0] == 200
    code, err = await api.call("PUT", "/v1/secrets/K5", {"value": "v"})
    assert code == 429 and "EWMS_SECRETS_MAX_PER_USER" in err["error"]
    assert (await api.call("PUT", "/v1/secrets/K0", {"value": "w"}))[0] == 200  # replacing is fine
    assert (await api.call("PUT", "/v1/secrets/K0", {"value": "w"}, sub="bob"))[0] == 200  # per user


async def test_without_a_key_secrets_answer_503_and_the_rest_works(backend: str | None) -> None:
    async with running_server(mongodb_url=backend, env={"EWMS_SECRETS_KEY": ""}) as srv:
        api = Api(srv)
        for method, path, body in (
            ("GET", "/v1/secrets", None),
            ("PUT", "/v1/secrets/K", {"value": "v"}),
            ("DELETE", "/v1/secrets/K", None),
        ):
            code, err = await api.call(method, path, body)
            assert code == 503 and "EWMS_SECRETS_KEY" in err["error"], (method, err)
        code, err = await api.call("GET", "/v1/pilot/secrets", token="TF-x.y")
        assert code == 503 and "EWMS_SECRETS_KEY" in err["error"]
        with_secrets = workflow_body()
        with_secrets["tasks"][0]["secrets"] = ["K"]
        code, err = await api.call("POST", "/v1/workflows", with_secrets)
        assert code == 503 and "EWMS_SECRETS_KEY" in err["error"]
        assert await srv.deps.store.count("workflows", {}) == 0
        assert (await api.call("POST", "/v1/workflows", workflow_body()))[0] == 200


async def test_a_bad_key_setting_is_refused_without_quoting_it() -> None:
    from ewms_server.config import Config, ConfigError

    for bad in ("short", "x" * 44, "!" * 43):
        with pytest.raises(ConfigError, match="EWMS_SECRETS_KEY") as info:
            Config.from_env({"EWMS_SECRETS_KEY": bad})
        assert bad not in str(info.value)
    key = new_key_text()
    cfg = Config.from_env({"EWMS_SECRETS_KEY": key})
    assert (
        cfg.secrets_key == parse_key(key) and key not in repr(cfg) and repr(cfg.secrets_key) not in repr(cfg)
    )


async def test_encrypted_at_rest_in_the_sqlite_file(tmp_path: Any) -> None:
    value = _value()
    data = tmp_path / "data"
    async with running_server(env={"EWMS_DATA_DIR": str(data)}) as srv:
        api = Api(srv)
        assert (await api.call("PUT", "/v1/secrets/DB_PASSWORD", {"value": value}))[0] == 200
        doc = await srv.deps.store.get("secrets", {"owner": "alice", "key": "DB_PASSWORD"})
        assert doc is not None and doc["ciphertext"].startswith("v1:") and value not in json.dumps(doc)
        key = parse_key(srv.deps.cfg.env["EWMS_SECRETS_KEY"])
        files = [f for f in glob.glob(str(data / "*")) if os.path.isfile(f)]  # not files/ (jobs)
        assert any(f.endswith(".sqlite3") for f in files)
        for path in files:  # the database, its WAL and shared memory: no value, no key
            raw = Path(path).read_bytes()
            assert value.encode() not in raw and key not in raw, path
        # bound to its owner and name: copied to another row, it does not decrypt
        box = srv.deps.secrets_box
        assert box is not None
        with pytest.raises(Exception, match="does not decrypt"):
            box.decrypt("bob", "DB_PASSWORD", doc["ciphertext"])
        with pytest.raises(Exception, match="does not decrypt"):
            box.decrypt("alice", "OTHER", doc["ciphertext"])
    for path in filter(os.path.isfile, glob.glob(str(data / "*"))):
        assert value.encode() not in Path(path).read_bytes(), path
    assert oct(os.stat(data / "ewms.sqlite3").st_mode & 0o777) == "0o600"


async def _starter(api: Api, uuid: str) -> dict[str, Any]:
    async def offered() -> dict[str, Any] | None:
        code, found = await api.call(
            "GET", f"/v1/tms/pending-starter/taskforces?schedd={SCHEDD}", sub="tms", role="admin"
        )
        assert code == 200
        return found if found and found["taskforce"]["taskforce_uuid"] == uuid else None

    return await wait_until(offered, timeout=10)  # type: ignore[no-any-return]


async def test_workflow_secrets_and_the_fetch_token(srv: RunningServer) -> None:
    api = Api(srv)
    a, b = _value(), _value()
    await api.call("PUT", "/v1/secrets/A", {"value": a})
    await api.call("PUT", "/v1/secrets/B_2", {"value": b})
    await api.call("PUT", "/v1/secrets/MISSING", {"value": "bob's"}, sub="bob")
    body = workflow_body(n_tasks=2)
    body["tasks"][0]["secrets"] = ["A", "MISSING", "B_2", "NOPE"]
    code, err = await api.call("POST", "/v1/workflows", body)
    assert code == 400 and "MISSING, NOPE" in err["error"]  # bob's MISSING is not alice's
    body["tasks"][0]["secrets"] = ["A", "1bad"]
    assert (await api.call("POST", "/v1/workflows", body))[0] == 400
    body["tasks"][0]["secrets"] = ["B_2", "A"]
    code, created = await api.call("POST", "/v1/workflows", body)
    assert code == 200
    with_secrets, without = created["task_directives"]
    assert with_secrets["secrets"] == ["B_2", "A"] and without["secrets"] == []
    uuid = created["taskforces"][0]["taskforce_uuid"]
    plain_uuid = created["taskforces"][1]["taskforce_uuid"]

    found = await _starter(api, uuid)
    token = found["secrets_fetch_token"]
    assert token.startswith(uuid + ".")
    assert (await _starter(api, plain_uuid)).get("secrets_fetch_token") is None  # no secrets: no token

    code, got = await api.call("GET", "/v1/pilot/secrets", token=token)
    assert (code, got) == (200, {"secrets": {"B_2": b, "A": a}})
    assert "no-store" in api.seen[-1]
    api.seen.pop()  # the one answer meant to carry them
    # forged, altered, or a user's token: 401
    forged = f"{plain_uuid}.{token.split('.', 1)[1]}"
    for bad in (forged, token + "x", srv.token(role="admin", sub="root"), "nothing"):
        code, err = await api.call("GET", "/v1/pilot/secrets", token=bad)
        assert code == 401, err
    # a secret deleted after submit: named in a 404
    await api.call("DELETE", "/v1/secrets/A")
    code, err = await api.call("GET", "/v1/pilot/secrets", token=token)
    assert code == 404 and "A" in err["error"]
    await api.call("PUT", "/v1/secrets/A", {"value": a})
    # the workflow ends: the token is revoked
    wid = created["workflow"]["workflow_id"]
    assert (await api.call("POST", f"/v1/workflows/{wid}/actions/abort"))[0] == 200
    code, err = await api.call("GET", "/v1/pilot/secrets", token=token)
    assert code == 403 and "ended" in err["error"]
    # the workflow's documents name the secrets, never their values
    for path in (
        f"/v1/workflows/{wid}",
        f"/v1/task-directives/{with_secrets['task_id']}",
        f"/v1/taskforces/{uuid}",
    ):
        assert (await api.call("GET", path))[0] == 200
    assert not api.leaked(a) and not api.leaked(b)


async def test_another_key_reads_nothing(srv: RunningServer) -> None:
    """A token minted under another EWMS_SECRETS_KEY is refused; a value stored under another
    key is a clear 503, not a 500."""
    api = Api(srv)
    await api.call("PUT", "/v1/secrets/A", {"value": "x"})
    body = workflow_body()
    body["tasks"][0]["secrets"] = ["A"]
    created = (await api.call("POST", "/v1/workflows", body))[1]
    uuid = created["taskforces"][0]["taskforce_uuid"]
    other = SecretsBox(os.urandom(32))
    assert (await api.call("GET", "/v1/pilot/secrets", token=other.fetch_token(uuid)))[0] == 401
    from ewms_server.storage.base import Change

    await srv.deps.store.update_where(
        "secrets", {"owner": "alice"}, Change(set={"ciphertext": other.encrypt("alice", "A", "x")})
    )
    token = (await _starter(api, uuid))["secrets_fetch_token"]
    code, err = await api.call("GET", "/v1/pilot/secrets", token=token)
    assert code == 503 and "does not decrypt" in err["error"]
