"""The one table of server settings: parsing (config.py), defaults and `--help` all come from
here."""

from __future__ import annotations

from dataclasses import dataclass


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
DEFAULTS = {s.name: s.default for s in SETTINGS}
