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
from .webhooks.settings import WebhookSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    help: str


# The one table of settings: parsing, defaults and `--help` all come from here.
SETTINGS: tuple[Setting, ...] = (
    Setting("EWMS_REST_HOST", "127.0.0.1", "Address the REST server listens on."),
    Setting("EWMS_REST_PORT", "8080", "Port the REST server listens on (0 = any free port)."),
    Setting(
        "EWMS_MONGODB_URL",
        None,
        "MongoDB URL (mongodb://… or mongodb+srv://…). Unset: the embedded SQLite store in EWMS_DATA_DIR.",
    ),
    Setting("EWMS_MONGODB_DB", "ewms", "Database name inside MongoDB."),
    Setting(
        "EWMS_DATA_DIR",
        None,
        "Directory of the embedded store (file ewms.sqlite3; created 0700). Default: "
        "$XDG_DATA_HOME/ewms, else ~/.local/share/ewms.",
    ),
    Setting(
        "EWMS_SQLITE_SYNCHRONOUS",
        "NORMAL",
        "SQLite's fsync policy. Either way every write is committed before its response, and a "
        "killed server loses nothing it acknowledged. NORMAL: a power cut may lose the last "
        "transactions (never consistency); FULL: nothing, at ~0.3 ms more per write.",
    ),
    Setting(
        "EWMS_SQLITE_BUSY_TIMEOUT_S",
        "10",
        "Seconds a write waits for another server process sharing the file before failing.",
    ),
    Setting("EWMS_SQLITE_READERS", "2", "Reader threads for the server's own SQLite reads."),
    Setting(
        "EWMS_SQLITE_QUERY_THREADS",
        "2",
        "Threads serving /v1/query/* on SQLite (apart from the readers, so a slow query never "
        "delays the TMS or health checks).",
    ),
    Setting(
        "EWMS_CLUSTER_LOCATIONS",
        None,
        'JSON object: cluster location -> schedd name, or -> {"schedd": …, "collector": …}. '
        'Default: {"local": "<this host name>"}.',
    ),
    Setting("EWMS_AUTH_SECRET", None, "Local HS256 signing secret for tokens (>= 32 bytes)."),
    Setting("EWMS_AUTH_OPENID_URL", None, "OIDC issuer URL; tokens are checked against its keys."),
    Setting("EWMS_AUTH_AUDIENCE", None, "Required token audience (with EWMS_AUTH_OPENID_URL)."),
    Setting("EWMS_AUTH_ROLE_CLAIM", "ewms_role", "Token claim holding the role (a string or list)."),
    Setting(
        "EWMS_AUTH_SCHEDDS_CLAIM",
        "ewms_schedds",
        "Token claim naming the schedds a system-tms token acts for (a list of names, or one "
        "string of names separated by spaces or commas).",
    ),
    Setting(
        "EWMS_AUTH_ALLOW_UNSCOPED_TMS",
        "false",
        "Legacy, for OIDC issuers that cannot add the schedds claim: true accepts system-tms "
        "tokens without it, acting for every schedd. Otherwise such tokens get 403.",
    ),
    Setting(
        "EWMS_DEV_MODE",
        "false",
        "true: a development instance; with no auth configured it makes a random secret and "
        "prints ready tokens at start.",
    ),
    Setting("EWMS_MAX_BODY_BYTES", str(1024 * 1024), "Largest request body accepted (413 above)."),
    Setting(
        "EWMS_MAX_STATUSES_BODY_BYTES",
        str(16 * 1024 * 1024),
        "Largest body of the TMS statuses report (POST /v1/tms/statuses/taskforces; 413 above).",
    ),
    Setting(
        "EWMS_HTTP_HEADER_TIMEOUT_S",
        "60",
        "Seconds a connection has to send a request's headers, from when it opened or finished "
        "its previous request (so also the longest a keep-alive connection stays idle).",
    ),
    Setting(
        "EWMS_HTTP_BODY_TIMEOUT_S", "60", "Seconds a request has to send its whole body; then it is closed."
    ),
    Setting(
        "EWMS_HTTP_MAX_IDLE_CONNECTIONS",
        "512",
        "Most connections waiting for a request's headers; above it the longest-waiting one is closed.",
    ),
    Setting(
        "EWMS_TRUSTED_PROXIES",
        None,
        "Addresses or CIDRs (comma-separated) of reverse proxies whose X-Forwarded-For / "
        "X-Real-Ip headers name the client. Unset: those headers are ignored.",
    ),
    Setting("EWMS_QUERY_PAGE_DOCS", "1000", "Most documents in one query page."),
    Setting("EWMS_QUERY_PAGE_BYTES", str(8 * 1024 * 1024), "Most JSON bytes in one query page."),
    Setting("EWMS_QUERY_MAX_DEPTH", "8", "Deepest nesting accepted in a query filter."),
    Setting(
        "EWMS_QUERY_MAX_CLAUSES",
        "2000",
        "Most field conditions in one query filter (each operator counts; 400 above).",
    ),
    Setting(
        "EWMS_QUERY_MAX_IN_ITEMS",
        "5000",
        "Most values in all the $in/$nin/$all lists of one query filter together (400 above).",
    ),
    Setting(
        "EWMS_QUERY_TIME_BUDGET_S",
        "5",
        "Longest the store may work on one query page; a query stopped at this budget is a 422 "
        "(SQLite: interrupted; MongoDB: maxTimeMS).",
    ),
    Setting("EWMS_MAX_SUBMIT_ATTEMPTS", "3", "Failed submits after which a taskforce is submit-failed."),
    Setting("EWMS_STARTER_LEASE_S", "120", "Seconds a taskforce given to one TMS is not offered again."),
    Setting("EWMS_SUBMIT_RETRY_DELAY_S", "10", "Seconds before a failed submit is offered again."),
    Setting("EWMS_LOOP_INTERVAL_S", "15", "Longest sleep of a background loop between passes."),
    Setting(
        "EWMS_ORPHAN_AGE_S", "600", "Age after which parts of an unfinished workflow create are removed."
    ),
    Setting(
        "EWMS_BROKER_URL",
        None,
        "amqp:// URL with admin credentials of the RabbitMQ broker. Unset: no broker; queue "
        "profiles name no broker.",
    ),
    Setting(
        "EWMS_BROKER_QUEUE_DELETE_GRACE_S",
        "86400",
        "Seconds after a workflow ends before its queues are deleted (or at the server's stop, "
        "if sooner: EWMS_BROKER_CLEANUP_ON_STOP_S).",
    ),
    Setting(
        "EWMS_BROKER_REVOKE_MAX_WAIT_S",
        "600",
        "An ended workflow's queue credentials are revoked once all its taskforces are over "
        "(so removed pilots end cleanly), or at the latest this many seconds after it ended.",
    ),
    Setting(
        "EWMS_BROKER_CLEANUP_ON_STOP_S",
        "10",
        "At shutdown, the longest the server spends finishing the broker cleanup of ended "
        "workflows (their broker users revoked, their vhosts and queues deleted, without waiting "
        "for EWMS_BROKER_QUEUE_DELETE_GRACE_S), so a stopped server leaves none behind; a workflow "
        "whose queues still hold messages keeps them for the grace period. 0: none.",
    ),
    Setting(
        "EWMS_HEALTH_BROKER_CACHE_S",
        "5",
        "Seconds GET /v1/health reuses its last broker check (login and rights on the management "
        "API, the AMQP port), so health stays cheap however often it is asked.",
    ),
    Setting("EWMS_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING, ERROR)."),
    Setting(
        "EWMS_INPUT_FILE_SCHEMES",
        "https,http,osdf,pelican",
        "URL schemes allowed in a task's pilot_config.input_files (comma-separated; HTCondor "
        "file-transfer plugins). Local paths and file:// are always refused: the access point "
        "would read them as the TMS.",
    ),
    Setting(
        "EWMS_MAX_WORKER_MEMORY",
        "1T",
        "Largest worker_memory a task may ask for (K, M, G, T: powers of 1024; a bare number is bytes).",
    ),
    Setting(
        "EWMS_MAX_WORKER_DISK",
        "20T",
        "Largest worker_disk a task may ask for (K, M, G, T: powers of 1024; a bare number is bytes).",
    ),
    Setting("EWMS_MAX_WORKER_CORES", "256", "Largest n_cores a task may ask for."),
    Setting(
        "EWMS_PROGRESS_CACHE_S",
        "5",
        "Seconds a workflow's progress answer (with its broker queue depths) is reused: at most "
        "one broker call per workflow this often, however many clients ask.",
    ),
    Setting(
        "EWMS_PROGRESS_SAMPLE_S",
        "10",
        "Least seconds between two samples of a workflow's tasks-done history (taken when the "
        "TMS reports task counts).",
    ),
    Setting("EWMS_PROGRESS_HISTORY_LEN", "200", "Samples kept per workflow (and per task) in its history."),
    Setting(
        "EWMS_PROGRESS_RATE_WINDOW_S",
        "300",
        "Seconds of history the completion rate (and so the ETA) is measured over.",
    ),
    Setting(
        "EWMS_RETRY_DEAD_LETTERS_MAX",
        "1000",
        "Most dead-lettered messages one retry-dead-letters call moves back (call again for more).",
    ),
    Setting(
        "EWMS_METRICS_ENABLED",
        "true",
        "false: no Prometheus metrics are kept, and GET /metrics answers 404.",
    ),
    Setting(
        "EWMS_METRICS_TOKEN",
        None,
        "A bearer token (any string, >= 16 characters) that may read GET /metrics besides admin "
        "tokens: for a Prometheus scraper. Unset: admin tokens only.",
    ),
    Setting(
        "EWMS_METRICS_CACHE_S",
        "10",
        "Seconds the workflow and taskforce counts of GET /metrics are reused (0: counted on every scrape).",
    ),
    Setting(
        "EWMS_DASHBOARD_OIDC_CLIENT_ID",
        None,
        "With EWMS_AUTH_OPENID_URL: the issuer's public client (no secret; PKCE) through which "
        "/dashboard/ signs users in. Its redirect URI is <server>/dashboard/. Unset: the "
        "dashboard takes a pasted token only.",
    ),
    Setting("EWMS_DASHBOARD_OIDC_SCOPE", "openid", "Scopes the dashboard asks the OIDC issuer for."),
    Setting(
        "EWMS_USER_MAX_ACTIVE_WORKFLOWS",
        "100",
        "Most workflows one user may have active (not finished or aborted) at once; one more is "
        "a 429. Per-user quotas: 0 = no limit; admins are exempt; replicas sharing a store may "
        "together overshoot one by (replicas - 1) in a burst.",
    ),
    Setting(
        "EWMS_USER_MAX_WORKFLOWS_PER_MIN",
        "30",
        "Most workflows one user may create in any 60 s (429 above, Retry-After when the oldest leaves the minute).",
    ),
    Setting(
        "EWMS_MAX_TASKFORCES_PER_WORKFLOW",
        "1000",
        "Most taskforces of one workflow not yet ended: add-workers past it is a 429; a create "
        "with more (tasks x cluster locations) is a 400.",
    ),
    Setting(
        "EWMS_JOBS_MAX_UPLOAD_BYTES",
        str(400 * 1024 * 1024),
        "Largest POST /v1/jobs upload (all its files and fields; a JSON 413 above), and largest "
        "output file a job's runner may upload.",
    ),
    Setting(
        "EWMS_USER_MAX_ACTIVE_JOBS",
        "10",
        "Most unfinished jobs (Queued or Running) one user may have at once; one more is a 429 "
        "with Retry-After (0 = no limit; admins are exempt).",
    ),
    Setting(
        "EWMS_JOBS_RETENTION_S",
        "604800",
        "Seconds a finished job's files (inputs, outputs) are kept; then they are deleted and "
        "the job shows its status only.",
    ),
    Setting(
        "EWMS_JOBS_SERVER_URL",
        None,
        "URL at which a job's runner (on the worker) reaches this server to fetch inputs and "
        "upload outputs. Default: http://<EWMS_REST_HOST>:<port>.",
    ),
    Setting(
        "EWMS_JOBS_TASK_IMAGE",
        "bash",
        "What runs a job's run.sh: with the process runner the program (bash), with containers "
        "an image that has bash.",
    ),
    Setting(
        "EWMS_JOBS_PILOT_IDLE_S",
        "600",
        "Seconds a job's pilot waits for its one message before it ends (the job's workflow is "
        "finished when its result is in, which ends the pilot sooner).",
    ),
    Setting(
        "EWMS_USER_MAX_ADD_WORKERS_PER_MIN",
        "60",
        "Most add-workers calls one user may make in any 60 s (429 above, with Retry-After).",
    ),
    Setting(
        "EWMS_WEBHOOK_ALLOWED_HOSTS",
        None,
        "Hosts a workflow's notify_url may name, comma-separated: `host` (any port), `host:port`, "
        "`*.example.org` (its subdomains). Unset: webhooks are off and a notify_url is a 400.",
    ),
    Setting(
        "EWMS_WEBHOOK_SECRET",
        None,
        "Key of the X-EWMS-Signature HMAC-SHA256 of every delivery (>= 16 bytes; required with "
        "EWMS_WEBHOOK_ALLOWED_HOSTS). Never logged.",
    ),
    Setting("EWMS_WEBHOOK_TIMEOUT_S", "10", "Seconds one delivery attempt may take (connect and answer)."),
    Setting(
        "EWMS_WEBHOOK_RETRY_BASE_S",
        "2",
        "Delay before the first retry of a failed delivery; it doubles with each further attempt.",
    ),
    Setting("EWMS_WEBHOOK_RETRY_MAX_S", "600", "Longest delay between two attempts of one delivery."),
    Setting(
        "EWMS_WEBHOOK_MAX_ATTEMPTS",
        "20",
        "Attempts after which a delivery is given up (recorded as failed in the outbox).",
    ),
    Setting(
        "EWMS_WEBHOOK_MAX_AGE_S",
        "86400",
        "Seconds after its event when a delivery not yet made is given up.",
    ),
    Setting(
        "EWMS_WEBHOOK_INPUT_CHECK_S",
        "10",
        "Seconds between checks (from the cached progress figures) of whether a running workflow "
        "with a notify_url has consumed all its input.",
    ),
    Setting(
        "EWMS_SECRETS_KEY",
        None,
        "Key users' secrets are encrypted with at rest (AES-256-GCM): the base64 encoding of 32 "
        "random bytes, e.g. from `ewms-server secrets-key`. Unset: /v1/secrets and workflows "
        "naming secrets answer 503; everything else works. Every replica needs the same key; "
        "without the key it was stored under, a secret cannot be read (set it again).",
    ),
    Setting("EWMS_SECRETS_MAX_VALUE_BYTES", "65536", "Largest secret value, in UTF-8 bytes (400 above)."),
    Setting("EWMS_SECRETS_MAX_PER_USER", "100", "Most secrets one user may keep (429 above)."),
    Setting(
        "EWMS_AUTOSCALE_INTERVAL_S",
        "5",
        "Seconds between autoscaler passes when nothing wakes it earlier (statuses reports, "
        "progress reads and new workflows do).",
    ),
    Setting(
        "EWMS_AUTOSCALE_TARGET_DRAIN_S",
        "60",
        "An autoscaled task gets enough workers to drain its backlog in about this long at the "
        "measured rate per worker (within its min/max and the caps).",
    ),
    Setting(
        "EWMS_AUTOSCALE_MESSAGES_PER_WORKER",
        "50",
        "Before an autoscaled task's rate is measured (nothing finished yet): one worker per this "
        "many messages of backlog (at least one, and twice those running).",
    ),
    Setting(
        "EWMS_AUTOSCALE_HOLD_DOWN_S",
        "30",
        "Scale in only after fewer workers were wanted for this long (scale out is at once).",
    ),
    Setting(
        "EWMS_AUTOSCALE_IDLE_TIMEOUT_S",
        "20",
        "Idle timeout of the pilots of taskforces the autoscaler adds (their "
        "EWMS_PILOT_TIMEOUT_QUEUE_INCOMING unless the task sets it): how soon an idle worker ends.",
    ),
    Setting(
        "EWMS_USER_MAX_WORKERS",
        "0",
        "Most workers of one user over all their live taskforces that the autoscaler sizes to "
        "(taskforces it does not size count too); 0 = no cap.",
    ),
    Setting(
        "EWMS_USER_SHARES",
        "{}",
        'Fair-share weights, JSON {"user": weight > 0}; absent users weigh 1 (equal shares). '
        "Pending-starter offers the waiting taskforce of the user holding the fewest workers "
        "for their share first, then by priority, then age; the autoscaler divides the caps so.",
    ),
    Setting(
        "EWMS_LOCATION_MAX_WORKERS",
        "{}",
        'Most workers the autoscaler sizes to at a cluster location, JSON {"location": n}, '
        "counting every live taskforce there; absent locations: no cap.",
    ),
    Setting(
        "EWMS_QUARANTINE_WINDOW_S",
        "600",
        "Quarantine: seconds over which each machine's failures (tasks failed, pilots in "
        "FatalError, jobs held) and successes are counted.",
    ),
    Setting(
        "EWMS_QUARANTINE_THRESHOLD",
        "5",
        "Quarantine: failures in the window that quarantine a machine (with the ratio below); "
        "0 = never automatically.",
    ),
    Setting(
        "EWMS_QUARANTINE_FAILURE_RATIO",
        "0.9",
        "Quarantine: least share of a machine's outcomes in the window that are failures "
        "(1 = no success at all).",
    ),
    Setting(
        "EWMS_QUARANTINE_COOLDOWN_S",
        "3600",
        "Quarantine: seconds an automatic entry lasts (admins lift entries at any time).",
    ),
)
_DEFAULTS = {s.name: s.default for s in SETTINGS}


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
