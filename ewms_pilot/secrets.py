"""The task's secrets: fetched once from the server at the pilot's start, given to each task
as `EWMS_SECRET_<key>` in its environment only (docs/contracts.md, section 1).

Where and how to fetch them is the `ewms_secrets` entry of the queue-auth file (0600):
`{"url": …, "token": …}`, a fetch token for this taskforce, never a value. The values live in
the pilot's memory only: not in its environment, its files, its logs or its chirps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import ConfigError

LOGGER = logging.getLogger(__name__)

SECRETS_ENTRY = "ewms_secrets"
ENV_PREFIX = "EWMS_SECRET_"
REQUEST_TIMEOUT = 30.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class SecretsFetch:
    url: str
    token: str = field(repr=False)


class SecretsError(Exception):
    """The secrets could not be fetched: a refusal, or the server unreachable for too long."""


class _Transient(Exception):
    """Worth another try (connection refused, timeout, 429, 5xx)."""


def load_fetch(path: str | None) -> SecretsFetch | None:
    """The fetch entry of the auth file (its mode is checked by `config.load_auth`); None when
    the task names no secrets."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"EWMS_PILOT_QUEUE_AUTH_FILE {path}: unreadable ({type(e).__name__})") from None
    entry = raw.get(SECRETS_ENTRY) if isinstance(raw, dict) else None
    if entry is None:
        return None
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("url"), str)
        and entry["url"].startswith(("http://", "https://"))
        and isinstance(entry.get("token"), str)
        and entry["token"]
    ):
        raise ConfigError(f"EWMS_PILOT_QUEUE_AUTH_FILE: malformed {SECRETS_ENTRY!r} entry")
    return SecretsFetch(entry["url"], entry["token"])


def task_variables(values: Mapping[str, str]) -> dict[str, str]:
    """{key: value} -> the task's {EWMS_SECRET_<key>: value}."""
    return {ENV_PREFIX + k: v for k, v in values.items()}


def _get(fetch: SecretsFetch) -> dict[str, str]:
    req = urllib.request.Request(
        fetch.url, headers={"Authorization": f"Bearer {fetch.token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as resp:
            body = resp.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as e:
        reason = _error_text(e)
        if e.code == 429 or e.code >= 500:
            raise _Transient(f"HTTP {e.code}: {reason}") from None
        raise SecretsError(f"the server refused the task's secrets (HTTP {e.code}): {reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise _Transient(str(getattr(e, "reason", e))) from None
    try:
        values = json.loads(body)["secrets"]
    except (ValueError, KeyError, TypeError):
        raise SecretsError('the server\'s answer to the secrets fetch is not {"secrets": {…}}') from None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise SecretsError('the server\'s answer to the secrets fetch is not {"secrets": {key: text}}')
    return values


def _error_text(e: urllib.error.HTTPError) -> str:
    """The server's JSON error message (it never quotes a value), else the reason phrase."""
    with contextlib.suppress(Exception):
        return str(json.loads(e.read(4096))["error"])[:300]
    return str(e.reason)[:300]


async def fetch_secrets(fetch: SecretsFetch, timeout: float, stop: asyncio.Event) -> dict[str, str] | None:
    """The task's values, retrying transient failures for `timeout` seconds; None if stopped
    meanwhile. SecretsError when refused or out of time."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        try:
            return await asyncio.to_thread(_get, fetch)
        except _Transient as e:
            if time.monotonic() + delay > deadline:
                raise SecretsError(f"could not fetch the task's secrets for {timeout:g} s: {e}") from None
            LOGGER.warning("fetching the task's secrets: %s; retrying in %.1f s", e, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return None
        delay = min(delay * 2, 5.0)
