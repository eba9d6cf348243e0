"""Server settings: read once from the environment into a frozen object (never at import)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .autoscale.settings import AutoscaleSettings
from .quarantine_rules import QuarantinePolicy
from .quotas import Quotas
from .rules import JobLimits
from .secrets_box import SecretsKeyError, parse_key
from .settings import DEFAULTS as _DEFAULTS
from .settings import SETTINGS
from .webhooks.settings import WebhookSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Location:
    schedd: str
    collector: str


@dataclass(frozen=True)
class Config:
    rest_host: str
    rest_port: int
    mongodb_url: str | None
    mongodb_db: str
    data_dir: str
    sqlite_synchronous: str
    sqlite_busy_timeout_s: float
    sqlite_readers: int
    sqlite_query_workers: int
    cluster_locations: Mapping[str, Location]
    auth_secret: str | None
    auth_openid_url: str | None
    auth_audience: str | None
    auth_role_claim: str
    auth_schedds_claim: str
    auth_allow_unscoped_tms: bool
    dev_mode: bool
    max_body_bytes: int
    max_statuses_body_bytes: int
    http_header_timeout_s: float
    http_body_timeout_s: float
    http_max_idle_connections: int
    trusted_proxies: tuple[IPNetwork, ...]
    query_page_docs: int
    query_page_bytes: int
    query_max_depth: int
    query_max_clauses: int
    query_max_in_items: int
    query_time_budget_s: float
    max_submit_attempts: int
    starter_lease_s: float
    submit_retry_delay_s: float
    loop_interval_s: float
    orphan_age_s: float
    broker_url: str | None
    broker_queue_delete_grace_s: float
    broker_revoke_max_wait_s: float
    log_level: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    job_limits: JobLimits = field(default_factory=JobLimits)
    progress_cache_s: float = 5.0
    progress_sample_s: float = 10.0
    progress_history_len: int = 200
    progress_rate_window_s: float = 300.0
    retry_dead_letters_max: int = 1000
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    metrics_cache_s: float = 10.0
    dashboard_oidc_client_id: str | None = None
    dashboard_oidc_scope: str = "openid"
    quotas: Quotas = field(default_factory=Quotas)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    secrets_key: bytes | None = field(default=None, repr=False)
    secrets_max_value_bytes: int = 65536
    secrets_max_per_user: int = 100
    broker_cleanup_on_stop_s: float = 10.0
    health_broker_cache_s: float = 5.0
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    quarantine: QuarantinePolicy = field(default_factory=QuarantinePolicy)
    jobs_max_upload_bytes: int = 400 * 1024 * 1024
    jobs_user_max_active: int = 10
    jobs_retention_s: float = 604800.0
    jobs_server_url: str | None = None
    jobs_task_image: str = "bash"
    jobs_pilot_idle_s: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else _DEFAULTS[name]

        problems: list[str] = []  # every bad setting is named at once

        def num(name: str, conv: Callable[[str], Any], minimum: float) -> Any:
            raw = get(name)
            try:
                value = conv(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                problems.append(f"{name}: expected a number, got {raw!r}")
                return conv(_DEFAULTS[name] or "0")
            if value < minimum:
                problems.append(f"{name}: must be >= {minimum}, got {raw!r}")
            return value

        def flag(name: str) -> bool:
            raw = (get(name) or "").lower()
            if raw not in ("true", "false", "1", "0", "yes", "no"):
                problems.append(f"{name}: expected true or false, got {raw!r}")
            return raw in ("true", "1", "yes")

        def parsed(parse: Callable[[], Any], fallback: Any) -> Any:
            try:
                return parse()
            except ConfigError as e:
                problems.append(str(e))
                return fallback

        secret = get("EWMS_AUTH_SECRET")
        if secret is not None and len(secret.encode()) < 32:
            problems.append("EWMS_AUTH_SECRET: must be at least 32 bytes")
        sync = (get("EWMS_SQLITE_SYNCHRONOUS") or "").upper()
        if sync not in ("FULL", "NORMAL"):
            problems.append(f"EWMS_SQLITE_SYNCHRONOUS: expected FULL or NORMAL, got {sync!r}")
        metrics_token = get("EWMS_METRICS_TOKEN")
        if metrics_token is not None and len(metrics_token) < 16:
            problems.append("EWMS_METRICS_TOKEN: must be at least 16 characters")
        level = (get("EWMS_LOG_LEVEL") or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"EWMS_LOG_LEVEL: unknown level {level!r}")
        cfg = cls(
            rest_host=get("EWMS_REST_HOST") or "127.0.0.1",
            rest_port=num("EWMS_REST_PORT", int, 0),
            mongodb_url=get("EWMS_MONGODB_URL"),
            mongodb_db=get("EWMS_MONGODB_DB") or "ewms",
            data_dir=get("EWMS_DATA_DIR") or default_data_dir(env),
            sqlite_synchronous=sync,
            sqlite_busy_timeout_s=num("EWMS_SQLITE_BUSY_TIMEOUT_S", float, 0),
            sqlite_readers=num("EWMS_SQLITE_READERS", int, 1),
            sqlite_query_workers=num("EWMS_SQLITE_QUERY_THREADS", int, 1),
            cluster_locations=parsed(lambda: parse_locations(get("EWMS_CLUSTER_LOCATIONS")), {}),
            auth_secret=secret,
            auth_openid_url=get("EWMS_AUTH_OPENID_URL"),
            auth_audience=get("EWMS_AUTH_AUDIENCE"),
            auth_role_claim=get("EWMS_AUTH_ROLE_CLAIM") or "ewms_role",
            auth_schedds_claim=get("EWMS_AUTH_SCHEDDS_CLAIM") or "ewms_schedds",
            auth_allow_unscoped_tms=flag("EWMS_AUTH_ALLOW_UNSCOPED_TMS"),
            dev_mode=flag("EWMS_DEV_MODE"),
            max_body_bytes=num("EWMS_MAX_BODY_BYTES", int, 1024),
            max_statuses_body_bytes=num("EWMS_MAX_STATUSES_BODY_BYTES", int, 1024),
            http_header_timeout_s=num("EWMS_HTTP_HEADER_TIMEOUT_S", float, 0.1),
            http_body_timeout_s=num("EWMS_HTTP_BODY_TIMEOUT_S", float, 0.1),
            http_max_idle_connections=num("EWMS_HTTP_MAX_IDLE_CONNECTIONS", int, 1),
            trusted_proxies=parsed(lambda: parse_networks(get("EWMS_TRUSTED_PROXIES")), ()),
            query_page_docs=num("EWMS_QUERY_PAGE_DOCS", int, 1),
            query_page_bytes=num("EWMS_QUERY_PAGE_BYTES", int, 1024),
            query_max_depth=num("EWMS_QUERY_MAX_DEPTH", int, 1),
            query_max_clauses=num("EWMS_QUERY_MAX_CLAUSES", int, 1),
            query_max_in_items=num("EWMS_QUERY_MAX_IN_ITEMS", int, 0),
            query_time_budget_s=num("EWMS_QUERY_TIME_BUDGET_S", float, 0.001),
            max_submit_attempts=num("EWMS_MAX_SUBMIT_ATTEMPTS", int, 1),
            starter_lease_s=num("EWMS_STARTER_LEASE_S", float, 0),
            submit_retry_delay_s=num("EWMS_SUBMIT_RETRY_DELAY_S", float, 0),
            loop_interval_s=num("EWMS_LOOP_INTERVAL_S", float, 0.01),
            orphan_age_s=num("EWMS_ORPHAN_AGE_S", float, 1),
            broker_url=get("EWMS_BROKER_URL"),
            broker_queue_delete_grace_s=num("EWMS_BROKER_QUEUE_DELETE_GRACE_S", float, 0),
            broker_revoke_max_wait_s=num("EWMS_BROKER_REVOKE_MAX_WAIT_S", float, 0),
            log_level=level,
            env=dict(env),
            job_limits=parsed(lambda: _job_limits(get), JobLimits()),
            progress_cache_s=num("EWMS_PROGRESS_CACHE_S", float, 0),
            progress_sample_s=num("EWMS_PROGRESS_SAMPLE_S", float, 0),
            progress_history_len=num("EWMS_PROGRESS_HISTORY_LEN", int, 2),
            progress_rate_window_s=num("EWMS_PROGRESS_RATE_WINDOW_S", float, 1),
            retry_dead_letters_max=num("EWMS_RETRY_DEAD_LETTERS_MAX", int, 1),
            metrics_enabled=flag("EWMS_METRICS_ENABLED"),
            metrics_token=metrics_token,
            metrics_cache_s=num("EWMS_METRICS_CACHE_S", float, 0),
            quotas=parsed(lambda: _quotas(get), Quotas()),
            webhooks=parsed(lambda: _webhooks(get), WebhookSettings()),
            secrets_key=parsed(lambda: _secrets_key(get("EWMS_SECRETS_KEY")), None),
            secrets_max_value_bytes=num("EWMS_SECRETS_MAX_VALUE_BYTES", int, 1),
            secrets_max_per_user=num("EWMS_SECRETS_MAX_PER_USER", int, 0),
            broker_cleanup_on_stop_s=num("EWMS_BROKER_CLEANUP_ON_STOP_S", float, 0),
            health_broker_cache_s=num("EWMS_HEALTH_BROKER_CACHE_S", float, 0),
            autoscale=parsed(lambda: _autoscale(get), AutoscaleSettings()),
            dashboard_oidc_client_id=get("EWMS_DASHBOARD_OIDC_CLIENT_ID"),
            dashboard_oidc_scope=get("EWMS_DASHBOARD_OIDC_SCOPE") or "openid",
            quarantine=parsed(lambda: _quarantine(get), QuarantinePolicy()),
            jobs_max_upload_bytes=num("EWMS_JOBS_MAX_UPLOAD_BYTES", int, 1024),
            jobs_user_max_active=num("EWMS_USER_MAX_ACTIVE_JOBS", int, 0),
            jobs_retention_s=num("EWMS_JOBS_RETENTION_S", float, 0),
            jobs_server_url=(get("EWMS_JOBS_SERVER_URL") or "").rstrip("/") or None,
            jobs_task_image=get("EWMS_JOBS_TASK_IMAGE") or "bash",
            jobs_pilot_idle_s=num("EWMS_JOBS_PILOT_IDLE_S", float, 1),
        )
        if problems:
            raise ConfigError("; ".join(problems))
        return cfg

    @property
    def auth_configured(self) -> bool:
        return bool(self.auth_secret or self.auth_openid_url)


def _secrets_key(raw: str | None) -> bytes | None:
    if raw is None:
        return None
    try:
        return parse_key(raw)
    except SecretsKeyError as e:
        raise ConfigError(str(e)) from None  # never quotes the value


def parse_networks(raw: str | None) -> tuple[IPNetwork, ...]:
    """`10.0.0.1, 192.168.0.0/16, ::1` -> networks (a bare address is a /32 or /128)."""
    out = []
    for item in (raw or "").replace(",", " ").split():
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"EWMS_TRUSTED_PROXIES: {item!r} is not an address or CIDR") from None
    return tuple(out)


def _job_limits(get: Callable[[str], str | None]) -> JobLimits:
    try:
        return JobLimits.from_settings(get)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _quotas(get: Callable[[str], str | None]) -> Quotas:
    try:
        return Quotas.from_settings(get)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _autoscale(get: Callable[[str], str | None]) -> AutoscaleSettings:
    try:
        return AutoscaleSettings.from_settings(get)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _webhooks(get: Callable[[str], str | None]) -> WebhookSettings:
    try:
        return WebhookSettings.from_settings(get)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _quarantine(get: Callable[[str], str | None]) -> QuarantinePolicy:
    try:
        return QuarantinePolicy.from_settings(get)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def default_data_dir(env: Mapping[str, str]) -> str:
    """$XDG_DATA_HOME/ewms, else ~/.local/share/ewms (the XDG base directory default)."""
    xdg = env.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "ewms")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "share", "ewms")


def parse_locations(raw: str | None) -> dict[str, Location]:
    """`{"loc": "schedd"}` or `{"loc": {"schedd": …, "collector": …}}`; default: local -> host."""
    if raw is None:
        return {"local": Location(schedd=socket.gethostname(), collector="")}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"EWMS_CLUSTER_LOCATIONS: not JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError("EWMS_CLUSTER_LOCATIONS: expected a non-empty JSON object")
    out: dict[str, Location] = {}
    for name, value in data.items():
        if isinstance(value, str) and value:
            out[name] = Location(schedd=value, collector="")
        elif isinstance(value, dict) and isinstance(value.get("schedd"), str) and value["schedd"]:
            out[name] = Location(schedd=value["schedd"], collector=str(value.get("collector", "")))
        else:
            raise ConfigError(
                f'EWMS_CLUSTER_LOCATIONS: location {name!r} needs a schedd name (a string or {{"schedd": …}})'
            )
    return out


def settings_help() -> str:
    lines = ["Settings (environment variables):"]
    for s in SETTINGS:
        default = "unset" if s.default is None else repr(s.default)
        lines.append(f"  {s.name}  (default: {default})\n      {s.help}")
    from .broker.rabbitmq import SETTINGS_DOCS  # the adapter owns its own settings

    lines.append("\nRabbitMQ adapter settings (with EWMS_BROKER_URL set):")
    known = {s.name for s in SETTINGS}
    for name, default, text in SETTINGS_DOCS:
        if name not in known:
            lines.append(f"  {name}  (default: {default})\n      {text}")
    return "\n".join(lines)
