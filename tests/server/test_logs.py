"""Logs cannot be forged: one record is one line whatever a client sends, and a forwarded
client address is believed only from a trusted proxy."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from ewms_server.auth import mint_token
from ewms_server.config import parse_networks
from ewms_server.handlers.connections import forwarded_client
from ewms_server.logs import FORMAT, EscapingFormatter, escape
from ewms_server.testing import running_server
from tests.conftest import LOCATIONS

FORGED = "2030-01-01 00:00:00,000 INFO ewms_server: all aborted"  # fits a 64-character id
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
SECRET = "s" * 40


def test_escape_keeps_text_on_one_line() -> None:
    assert escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape("\x00\x1b[31m\x7f\x85\u2028\u2029") == "\\x00\\x1b[31m\\x7f\\x85\\u2028\\u2029"
    assert escape("plain text, ünïcode, \\n as typed") == "plain text, ünïcode, \\n as typed"


def _format(record: logging.LogRecord) -> str:
    return EscapingFormatter(FORMAT).format(record)


def test_formatter_escapes_messages_and_exception_text() -> None:
    record = logging.LogRecord(
        "ewms_server.requests", logging.INFO, __file__, 1, "GET %s", ("/x\n" + FORGED,), None
    )
    assert _format(record).count("\n") == 0 and "\\n" + FORGED in _format(record)
    try:
        try:
            raise KeyError("inner\n" + FORGED)
        except KeyError as e:
            raise ValueError("outer\r\n" + FORGED) from e
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("ewms_server", logging.ERROR, __file__, 1, "boom", (), exc_info)
    lines = _format(record).splitlines()
    assert not any(line.startswith(FORGED) for line in lines)
    assert lines[-1] == "ValueError: outer\\r\\n" + FORGED
    assert "KeyError: 'inner\\n" + FORGED + "'" in lines
    assert "The above exception was the direct cause of the following exception:" in lines
    assert sum(line == "Traceback (most recent call last):" for line in lines) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, token: str, method: str = "GET") -> int:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_forged_line_in_a_request_is_one_escaped_line(tmp_path: Path) -> None:
    """The real server's stderr: a path and a token subject carrying a newline and a whole
    fake record each give one line with the newline escaped."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env.update(
        {
            "EWMS_AUTH_SECRET": SECRET,
            "EWMS_REST_PORT": str(port),
            "EWMS_LOG_LEVEL": "DEBUG",
            "EWMS_DATA_DIR": str(tmp_path / "data"),
        }
    )
    proc = subprocess.Popen([sys.executable, "-m", "ewms_server"], env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/v1/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        admin = mint_token(SECRET, sub="root", role="admin")
        forged_path = urllib.parse.quote("\n" + FORGED)
        assert _call(f"{base}/v1/workflows/WF-x{forged_path}", admin) == 404
        assert _call(f"{base}/v1/no-such{forged_path}", admin) == 404
        evil = mint_token(SECRET, sub="mallory\r\n" + FORGED, role="user")
        assert _call(f"{base}/v1/workflows/WF-x/actions/abort", evil, "POST") == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = err.splitlines()
    assert not [line for line in lines if line.startswith(FORGED)], "a forged record got its own line"
    assert all(RECORD_START.match(line) for line in lines), "\n".join(lines)
    escaped = [line for line in lines if "\\n" + FORGED in line]
    assert any("no workflow WF-x\\n" + FORGED in line for line in escaped)
    assert any("by user:mallory\\r\\n" + FORGED in line for line in escaped)


def test_forwarded_client_reads_the_chain_from_the_right() -> None:
    proxies = parse_networks("127.0.0.1, 10.0.0.0/8")

    def client(**headers: str) -> str:
        from tornado.httputil import HTTPHeaders

        return forwarded_client(
            HTTPHeaders({k.replace("_", "-"): v for k, v in headers.items()}), "127.0.0.1", proxies
        )

    assert client() == "127.0.0.1"
    assert client(X_Forwarded_For="203.0.113.7") == "203.0.113.7"
    # the client can write anything left of the proxies: only the rightmost untrusted counts
    assert client(X_Forwarded_For="1.2.3.4, 203.0.113.7, 10.1.2.3") == "203.0.113.7"
    assert client(X_Forwarded_For="10.0.0.1, 10.0.0.2") == "10.0.0.1"
    assert client(X_Real_Ip="198.51.100.9") == "198.51.100.9"
    assert client(X_Forwarded_For="203.0.113.7, not-an-ip") == "127.0.0.1"
    assert client(X_Real_Ip="evil\nline") == "127.0.0.1"


@pytest.mark.parametrize(
    "trusted,expected",
    [(None, "127.0.0.1"), ("192.0.2.0/24", "127.0.0.1"), ("127.0.0.0/8", "203.0.113.7")],
)
async def test_forwarded_headers_only_from_trusted_proxies(
    trusted: str | None, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"EWMS_TRUSTED_PROXIES": trusted} if trusted else {}
    async with running_server(cluster_locations=LOCATIONS, mongodb_url=None, env=env) as srv:
        caplog.set_level(logging.INFO, logger="tornado.access")
        for headers in ({"X-Forwarded-For": "203.0.113.7"}, {"X-Real-Ip": "203.0.113.7"}):
            caplog.clear()
            r = await AsyncHTTPClient().fetch(srv.url + "/v1/nope", headers=headers, raise_error=False)
            assert r.code == 404 and json.loads(r.body)["code"] == 404
            (line,) = [rec.getMessage() for rec in caplog.records if rec.name == "tornado.access"]
            assert line.startswith("404 GET /v1/nope (") and f"({expected})" in line, line


@pytest.mark.parametrize(
    "level,pika_level", [("INFO", logging.WARNING), ("WARNING", logging.WARNING), ("DEBUG", logging.DEBUG)]
)
def test_pika_logs_at_warning_unless_debugging(
    level: str, pika_level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pika logs each connection's life at INFO; the server shows it only at DEBUG."""
    from ewms_server import logs

    root, pika_logger = logging.getLogger(), logging.getLogger("pika")
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(pika_logger, "level", pika_logger.level)
    logs.configure(level)
    assert pika_logger.getEffectiveLevel() == pika_level
    assert logging.getLogger("ewms_server").getEffectiveLevel() == getattr(logging, level)
