"""`ewms secret set|list|delete` as a user runs it, against a real server."""

from __future__ import annotations

import json

from ewms_server.testing import RunningServer, running_server

from .cli import cli_env, ewms

VALUE = "cli-secret-value-0123456789"


async def test_set_list_delete_never_print_the_value(srv: RunningServer) -> None:
    env = cli_env(srv)
    outputs = []
    for args, stdin in (
        (("secret", "set", "FROM_STDIN"), f"{VALUE}\n".encode()),
        (("secret", "set", "FROM_FLAG", "--value", VALUE + "-flag"), None),
        (("secret", "list"), None),
        (("secret", "list", "--json"), None),
    ):
        code, out, err = await ewms(env, *args, stdin=stdin)
        assert code == 0, err
        outputs += [out, err]
    assert "FROM_STDIN set" in outputs[0] and "EWMS_SECRET_FROM_STDIN" in outputs[0]
    assert [line.split()[0] for line in outputs[4].splitlines()] == [
        "FROM_FLAG",
        "FROM_STDIN",
    ]  # sorted, with when each was set
    assert [s["key"] for s in json.loads(outputs[6])] == ["FROM_FLAG", "FROM_STDIN"]
    assert not [o for o in outputs if VALUE in o]
    # stored as given: one trailing newline of stdin dropped, nothing else
    box = srv.deps.secrets_box
    assert box is not None
    for key, want in (("FROM_STDIN", VALUE), ("FROM_FLAG", VALUE + "-flag")):
        doc = await srv.deps.store.get("secrets", {"owner": "alice", "key": key})
        assert doc is not None and box.decrypt("alice", key, doc["ciphertext"]) == want
    # another user sees none of them and cannot delete them
    code, out, _ = await ewms(cli_env(srv, "bob"), "secret", "list")
    assert code == 0 and "no secrets" in out
    code, _, err = await ewms(cli_env(srv, "bob"), "secret", "delete", "FROM_FLAG")
    assert code == 1 and "404" in err and "FROM_FLAG" in err
    code, out, err = await ewms(env, "secret", "delete", "FROM_FLAG")
    assert code == 0 and "FROM_FLAG deleted" in out, err
    code, out, _ = await ewms(env, "secret", "list")
    assert [line.split()[0] for line in out.splitlines()] == ["FROM_STDIN"]


async def test_bad_names_and_a_server_without_a_key(srv: RunningServer) -> None:
    for args in (("secret", "set", "1BAD", "--value", "v"), ("secret", "delete", "a-b")):
        code, _, err = await ewms(cli_env(srv), *args)
        assert code == 1 and "bad secret name" in err, err
    async with running_server(env={"EWMS_SECRETS_KEY": ""}) as off:
        code, _, err = await ewms(cli_env(off), "secret", "set", "K", stdin=b"v")
        assert code == 1 and "503" in err and "EWMS_SECRETS_KEY" in err
