"""Webhook settings (from config.SETTINGS) and the allow-list of destination hosts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import Invalid

SETTING_NAMES = (
    "EWMS_WEBHOOK_ALLOWED_HOSTS",
    "EWMS_WEBHOOK_SECRET",
    "EWMS_WEBHOOK_TIMEOUT_S",
    "EWMS_WEBHOOK_RETRY_BASE_S",
    "EWMS_WEBHOOK_RETRY_MAX_S",
    "EWMS_WEBHOOK_MAX_ATTEMPTS",
    "EWMS_WEBHOOK_MAX_AGE_S",
    "EWMS_WEBHOOK_INPUT_CHECK_S",
)
MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class HostRule:
    """One entry of EWMS_WEBHOOK_ALLOWED_HOSTS: `host`, `host:port`, `*.domain[:port]`."""

    host: str
    """lower case; for a wildcard the suffix with its leading dot (`.example.org`)"""
    port: int | None
    """None: any port"""
    wildcard: bool

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        text = entry.strip().lower()
        wildcard = text.startswith("*.")
        if wildcard:
            text = text[1:]  # keep the dot: `*.example.org` never matches `badexample.org`
        try:
            parts = urlsplit("//" + text.lstrip("."))
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host or parts.path or parts.query or parts.username or "*" in text:
            raise ValueError(
                f"EWMS_WEBHOOK_ALLOWED_HOSTS: {entry.strip()!r} is not host, host:port or *.domain"
            )
        return cls("." + host if wildcard else host, port, wildcard)

    def allows(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        return host.endswith(self.host) if self.wildcard else host == self.host


@dataclass(frozen=True)
class WebhookSettings:
    allowed_hosts: tuple[HostRule, ...] = ()
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    retry_base_s: float = 2.0
    retry_max_s: float = 600.0
    max_attempts: int = 20
    max_age_s: float = 86400.0
    input_check_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_hosts)

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery is this server's: past any attempt's timeout."""
        return 2 * self.timeout_s + 5

    @classmethod
    def from_settings(cls, get: Callable[[str], str | None]) -> WebhookSettings:
        """Raises ValueError naming the setting."""

        def num(name: str, conv: Callable[[str], float], minimum: float) -> float:
            raw = get(name)
            try:
                value = conv(raw or "")
            except ValueError:
                raise ValueError(f"{name}: expected a number, got {raw!r}") from None
            if value < minimum:
                raise ValueError(f"{name}: must be >= {minimum}, got {raw!r}")
            return value

        rules = tuple(
            HostRule.parse(e) for e in (get("EWMS_WEBHOOK_ALLOWED_HOSTS") or "").split(",") if e.strip()
        )
        secret = get("EWMS_WEBHOOK_SECRET")
        if rules and (secret is None or len(secret.encode()) < 16):
            raise ValueError(
                "EWMS_WEBHOOK_SECRET: must be set (>= 16 bytes) when EWMS_WEBHOOK_ALLOWED_HOSTS is: "
                "every delivery is signed with it"
            )
        base = num("EWMS_WEBHOOK_RETRY_BASE_S", float, 0.01)
        return cls(
            allowed_hosts=rules,
            secret=secret,
            timeout_s=num("EWMS_WEBHOOK_TIMEOUT_S", float, 0.1),
            retry_base_s=base,
            retry_max_s=num("EWMS_WEBHOOK_RETRY_MAX_S", float, base),
            max_attempts=int(num("EWMS_WEBHOOK_MAX_ATTEMPTS", int, 1)),
            max_age_s=num("EWMS_WEBHOOK_MAX_AGE_S", float, 1),
            input_check_s=num("EWMS_WEBHOOK_INPUT_CHECK_S", float, 0.1),
        )

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be called (None: it may). Checked at submit and again before every
        attempt, so a host removed from the list is never called again."""
        if not self.enabled:
            return "webhooks are disabled on this server (EWMS_WEBHOOK_ALLOWED_HOSTS is empty)"
        if len(url) > MAX_URL_LENGTH:
            return f"longer than {MAX_URL_LENGTH} characters"
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
            return "contains whitespace or control characters"
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return "is not a well-formed URL (host or port)"
        if parts.scheme not in DEFAULT_PORTS:
            return "not an http:// or https:// URL"
        if not host:
            return "names no host"
        port = port or DEFAULT_PORTS[parts.scheme]
        if not any(rule.allows(host, port) for rule in self.allowed_hosts):
            return f"host {host}:{port} is not in EWMS_WEBHOOK_ALLOWED_HOSTS"
        return None

    def check_url(self, url: str | None, where: str = "body.notify_url") -> None:
        """Raise Invalid (400) when a request's notify_url may not be called."""
        if url is None:
            return
        why = self.refusal(url)
        if why is not None:
            raise Invalid(f"{where}: {why}")


def host_of(url: str) -> str:
    """What a log line may say about a destination: its host and port, never the path or query
    (which may hold credentials)."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme, '?')}"
    except ValueError:
        return "(malformed)"
