"""The `ewms` CLI against a real server (ewms_server.testing) and the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ewms_server.testing import RunningServer

from .cli import EXAMPLES, cli_env, ewms, run_pilot


async def test_submit_push_run_pilot_pull_finish(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    code, out, err = await ewms(env, "submit", str(EXAMPLES / "square.json"))
    assert code == 0, err
    wf = out.strip()
    assert wf.startswith("WF-")

    code, _out, err = await ewms(env, "push", wf, "--lines", str(EXAMPLES / "numbers.txt"))
    assert code == 0, err
    assert "pushed 5 message(s) to numbers" in err

    code, _out, err = await run_pilot(srv, wf, tmp_path, "numbers", "squares")
    assert code == 0, err

    code, out, err = await ewms(env, "pull", wf, "--out", "-", "--n", "5", "--timeout", "5")
    assert code == 0, err
    assert sorted(out.split()) == sorted(["1", "4", "9", "16", "25"])

    code, out, err = await ewms(env, "watch", wf, "--once")
    assert code == 0, err
    assert out.startswith(f"workflow {wf}\nprogress [")  # no TMS reported: no task counted yet

    code, out, err = await ewms(env, "finish", wf)
    assert code == 0, err
    assert out.startswith(f"finished {wf}")


async def test_pull_to_a_directory_and_push_files(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    code, out, err = await ewms(env, "submit", str(EXAMPLES / "square.json"))
    assert code == 0, err
    wf = out.strip()
    files = []
    for i, body in enumerate([b"one\nmessage", b"two"]):
        files.append(tmp_path / f"m{i}")
        files[-1].write_bytes(body)
    # push straight to the output queue by alias, then pull it back into files
    code, _out, err = await ewms(env, "push", wf, "--queue", "squares", *map(str, files))
    assert code == 0, err
    out_dir = tmp_path / "results"
    code, _out, err = await ewms(env, "pull", wf, "--out", str(out_dir), "--timeout", "2")
    assert code == 0, err
    assert sorted(p.read_bytes() for p in out_dir.iterdir()) == [b"one\nmessage", b"two"]
    code, out, err = await ewms(env, "abort", wf)
    assert code == 0 and out.startswith(f"aborted {wf}"), err


@pytest.mark.parametrize(
    "args, message",
    [
        (["abort", "WF-nope"], "404 from the EWMS server"),
        (["push", "WF-nope", "x"], "404 from the EWMS server"),
        (["submit", "/nonexistent.json"], "cannot read /nonexistent.json"),
    ],
)
async def test_user_mistakes_are_one_line_errors(srv: RunningServer, args: list[str], message: str) -> None:
    code, out, err = await ewms(cli_env(srv), *args)
    assert code == 1 and out == ""
    assert err.startswith("ewms: error: ") and message in err, err
    assert "Traceback" not in err


async def test_bad_requests_and_settings_are_reported(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _out, err = await ewms(env, "submit", str(bad))
    assert code == 1 and "is not valid JSON" in err
    bad.write_text(json.dumps({"tasks": []}))
    code, _out, err = await ewms(env, "submit", str(bad))
    assert code == 1 and "400 from the EWMS server" in err and "Traceback" not in err
    code, out, _ = await ewms(env, "submit", str(EXAMPLES / "square.json"))
    code, _out, err = await ewms(env, "push", out.strip(), "--queue", "nope", "-", stdin=b"x")
    assert code == 1 and "no public queue 'nope'" in err and "numbers" in err
    code, _out, err = await ewms({k: v for k, v in env.items() if k != "EWMS_URL"}, "abort", "W")
    assert code == 2 and err == "ewms: configuration error: EWMS_URL not set (see ewms --help)\n"
    code, _out, err = await ewms({k: v for k, v in env.items() if not k.startswith("EWMS_")}, "list")
    assert code == 2 and "EWMS_URL and EWMS_TOKEN not set" in err  # every missing setting at once


async def test_another_user_cannot_reach_the_workflow(srv: RunningServer) -> None:
    code, out, _ = await ewms(cli_env(srv, "alice"), "submit", str(EXAMPLES / "square.json"))
    assert code == 0
    code, _out, err = await ewms(cli_env(srv, "mallory"), "pull", out.strip(), "--out", "-")
    assert code == 1 and ("404" in err or "403" in err) and "Traceback" not in err


async def test_pika_logs_only_at_debug(srv: RunningServer) -> None:
    env = cli_env(srv)
    wf = (await ewms(env, "submit", str(EXAMPLES / "square.json")))[1].strip()
    code, _out, err = await ewms(env, "--log-level", "INFO", "push", wf, "-", stdin=b"1")
    assert code == 0 and err == "pushed 1 message(s) to numbers\n", err
    code, _out, err = await ewms({**env, "EWMS_LOG_LEVEL": "debug"}, "push", wf, "-", stdin=b"2")
    assert code == 0 and " DEBUG pika." in err, err
    code, _out, err = await ewms({**env, "EWMS_LOG_LEVEL": "loud"}, "list")
    assert code == 2 and err.endswith(
        "ewms: error: EWMS_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, not 'LOUD'\n"
    )
