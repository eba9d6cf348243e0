#!/usr/bin/env bash
# One-command demo: a whole EWMS workflow on this machine, end to end.
#
#   RabbitMQ on loopback (installed / started / management plugin enabled if needed)
#   -> ewms-server (the embedded SQLite store in the temp dir, a free port, a random signing secret)
#   -> ewms-tms (local backend: each HTCondor job is an `ewms-pilot` process here)
#   -> `ewms` CLI: submit resources/examples/square-then-add-one.json, push 100 numbers,
#      pull 100 results, finish the workflow, wait for every taskforce to end.
#
# Prints a results summary; stops everything it started on exit; exits non-zero on failure.
# Logs (server, TMS, job directories) stay in the temp dir it prints.
# If it had to start RabbitMQ (or its application), it stops it again at the end.
# Settings: EWMS_BROKER_URL (default amqp://guest:guest@127.0.0.1:5672/%2F), any other
# EWMS_BROKER_* setting of the server (e.g. EWMS_BROKER_MANAGEMENT_URL), DEMO_N (100).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
N="${DEMO_N:-100}"
BROKER_URL="${EWMS_BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}"
SCHEDD="demo-schedd"
T0=$(date +%s.%N)
SECONDS=0

say() { printf '[demo %3ds] %s\n' "$SECONDS" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

WORK="$(mktemp -d -t ewms-demo.XXXXXX)"
chmod 700 "$WORK"
SERVER_PID="" TMS_PID="" WF="" FINISHED="" RABBIT_STARTED=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$WF" ] && [ -z "$FINISHED" ]; then
        say "aborting workflow $WF"
        timeout 20 ewms abort "$WF" >/dev/null 2>&1 && wait_queues_deleted 15 >/dev/null 2>&1 \
            || delete_broker_objects  # the server is gone: remove its broker user and queues
    fi
    # local clusters outlive their TMS (as HTCondor jobs do): stop any that are left
    for pid_file in "$WORK"/tms-jobs/.local-schedd/clusters/*.pid; do
        [ -e "$pid_file" ] || continue
        local pid; pid="$(cat "$pid_file")"
        if [ ! -e "${pid_file%.pid}.done" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
        fi
    done
    for pid in $TMS_PID $SERVER_PID; do
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    case "$RABBIT_STARTED" in  # leave the machine as it was
        app) say "stopping the RabbitMQ application (the demo started it)"
             as_root timeout 60 rabbitmqctl -q stop_app >/dev/null 2>&1 ;;
        node) say "stopping RabbitMQ (the demo started it)"
              as_root timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 ;;
    esac
    if [ "$rc" = 0 ]; then
        say "done; logs in $WORK"
    else
        say "FAILED (exit $rc); logs in $WORK (server.log, tms.log, tms-jobs/)" >&2
        tail -n 5 "$WORK/server.log" "$WORK/tms.log" 2>/dev/null | sed 's/^/    /' >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "logs and job directories: $WORK"

# -- RabbitMQ on loopback, with the management API -----------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    say "installing rabbitmq-server (apt-get)"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
        rabbitmq-server >/dev/null
fi
if ! as_root timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
    if as_root timeout 30 rabbitmqctl -q ping >/dev/null 2>&1; then
        say "RabbitMQ node is up but its application is stopped: starting it"
        RABBIT_STARTED=app
        as_root timeout 60 rabbitmqctl -q start_app >/dev/null
    else
        say "starting RabbitMQ"
        RABBIT_STARTED=node
        as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    fi
    for i in $(seq 1 90); do  # await_startup fails at once while the node is not up yet
        as_root timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1 && break
        [ "$i" -lt 90 ] || die "RabbitMQ did not start (see /var/log/rabbitmq/)"
        sleep 1
    done
fi
if ! as_root timeout 30 rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
    say "enabling the RabbitMQ management plugin"
    as_root timeout 60 rabbitmq-plugins -q enable rabbitmq_management >/dev/null
fi

# -- the project ----------------------------------------------------------------------------
if ! command -v ewms-server >/dev/null 2>&1; then
    say "installing the project (pip install -e .)"
    python3 -m pip install -q --disable-pip-version-check -e "$REPO"
fi
PY="$(python3 -c 'import sys; print(sys.executable)')"  # the interpreter, not a shim

py() { "$PY" - "$@"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$(( $(date +%s) + $1 )) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what"
        sleep 0.5
    done
}
broker_ready() { py "$BROKER_URL" <<'PY'
import os, sys, requests
from ewms_server.broker.rabbitmq import RabbitMQSettings
s = RabbitMQSettings.from_env({**os.environ, "EWMS_BROKER_URL": sys.argv[1]})
r = requests.get(s.management_url + "/api/overview", auth=s.admin_auth, timeout=2)
sys.exit(0 if r.ok else 1)
PY
}
wait_for 60 "the RabbitMQ management API" broker_ready

# -- the server -----------------------------------------------------------------------------
PORT="$(py <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PY
)"
EWMS_AUTH_SECRET="$(py <<'PY'
import secrets; print(secrets.token_urlsafe(48))
PY
)"
export EWMS_AUTH_SECRET
export EWMS_URL="http://127.0.0.1:$PORT"
say "starting ewms-server on $EWMS_URL (embedded database, broker $(echo "$BROKER_URL" | sed 's#//[^@]*@#//#'))"
EWMS_REST_HOST=127.0.0.1 EWMS_REST_PORT="$PORT" EWMS_BROKER_URL="$BROKER_URL" EWMS_DATA_DIR="$WORK/data" \
    EWMS_CLUSTER_LOCATIONS="{\"local\": \"$SCHEDD\"}" EWMS_LOOP_INTERVAL_S=1 \
    EWMS_BROKER_QUEUE_DELETE_GRACE_S=0 \
    ewms-server serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
healthy() { kill -0 "$SERVER_PID" && py "$EWMS_URL/v1/health" <<'PY'
import sys, requests
sys.exit(0 if requests.get(sys.argv[1], timeout=2).status_code == 200 else 1)
PY
}
wait_for 30 "the server to be healthy" healthy

EWMS_TOKEN="$(ewms-server mint-token --sub demo-user --role user --expires 900)"
TMS_TOKEN="$(ewms-server mint-token --sub demo-tms --role system-tms --schedd "$SCHEDD" --expires 900)"
export EWMS_TOKEN
unset EWMS_AUTH_SECRET  # nothing below signs tokens

# -- the TMS --------------------------------------------------------------------------------
# As root the local backend runs each taskforce's jobs under a uid of their own: they need a
# pilot and a task interpreter any user can run, and a way through $WORK to their directories.
if [ "$(id -u)" = 0 ]; then
    say "preparing a pilot runtime any job uid can run (resources/pilot-venv.sh)"
    bash "$REPO/resources/pilot-venv.sh" /opt/ewms-pilot-venv >/dev/null
    chmod 711 "$WORK"
    TMS_LOCAL=(EWMS_TMS_LOCAL_JOB_COMMAND="/opt/ewms-pilot-venv/bin/python -m ewms_pilot" PYTHONPATH="$REPO")
    TASK_PY=/usr/bin/python3
else
    TMS_LOCAL=(EWMS_TMS_LOCAL_SINGLE_TENANT=true)  # one user: every task trusted alike
    TASK_PY="$PY"
fi
say "starting ewms-tms (local backend, schedd $SCHEDD)"
env -u EWMS_TOKEN -u EWMS_URL "${TMS_LOCAL[@]}" \
    EWMS_TMS_SERVER_URL="$EWMS_URL" EWMS_TMS_TOKEN="$TMS_TOKEN" EWMS_TMS_SCHEDD="$SCHEDD" \
    EWMS_TMS_BACKEND=local EWMS_TMS_JOB_EVENT_LOG_DIR="$WORK/tms-jobs" \
    EWMS_TMS_STARTER_INTERVAL=0.2 EWMS_TMS_STOPPER_INTERVAL=0.5 \
    EWMS_TMS_WATCHER_INTERVAL=0.5 EWMS_TMS_TRACKER_INTERVAL=2 \
    ewms-tms >"$WORK/tms.log" 2>&1 &
TMS_PID=$!
unset TMS_TOKEN

# -- the workflow ---------------------------------------------------------------------------
# the example names `python3` and repository-relative scripts; jobs run in their own
# directory, so make both absolute
py "$REPO" "$WORK/workflow.json" "$TASK_PY" <<'PY'
import json, sys
repo, out, python = sys.argv[1:]
wf = json.load(open(f"{repo}/resources/examples/square-then-add-one.json"))
for t in wf["tasks"]:
    t["task_image"] = python
    t["task_args"] = f"{repo}/{t['task_args']}"
json.dump(wf, open(out, "w"), indent=2)
PY
seq 1 "$N" >"$WORK/numbers.txt"

phases() { py "$WF" <<'PY'
import os, sys
from ewms_client.client import EWMSClient
tfs = EWMSClient.from_env(os.environ).taskforces(sys.argv[1])
print(" ".join(sorted(tf["phase"] for tf in tfs)))
PY
}
wait_queues_deleted() { py "$WF" "$1" <<'PY'
import os, sys, time
from ewms_client.client import EWMSClient
c, deadline = EWMSClient.from_env(os.environ), time.monotonic() + float(sys.argv[2])
while not c.workflow(sys.argv[1]).get("queues_deleted"):
    if time.monotonic() > deadline:
        sys.exit("the server did not delete the workflow's queues")
    time.sleep(0.5)
PY
}

delete_broker_objects() { py "$BROKER_URL" "$WORK/submitted.json" <<'PY'
import json, os, sys, requests
from ewms_server.broker.rabbitmq import RabbitMQSettings, leftover_paths
s = RabbitMQSettings.from_env({**os.environ, "EWMS_BROKER_URL": sys.argv[1]})
created = json.load(open(sys.argv[2]))
api = s.management_url.rstrip("/") + "/api"
for path in leftover_paths(created["workflow"]["workflow_id"]):
    requests.delete(api + path, auth=s.admin_auth, timeout=5)
PY
}

timeout 30 ewms submit --json "$WORK/workflow.json" >"$WORK/submitted.json"
WF="$(py "$WORK/submitted.json" <<'PY'
import json, sys; print(json.load(open(sys.argv[1]))["workflow"]["workflow_id"])
PY
)"
say "submitted workflow $WF: numbers -> square -> add one -> results (2 tasks, 2 pilots each)"
T_SUBMIT=$(date +%s.%N)
timeout 90 ewms push "$WF" --lines "$WORK/numbers.txt" --wait 60 2>&1 | sed 's/^/    /'
say "pulling $N results"
timeout 120 ewms pull "$WF" --out - --n "$N" --timeout 90 --wait 60 \
    >"$WORK/results.txt" 2>"$WORK/pull.err" || { cat "$WORK/pull.err" >&2; die "pull failed"; }
T_PULLED=$(date +%s.%N)
timeout 30 ewms watch "$WF" --once | sed 's/^/    /'

say "finishing the workflow"
timeout 30 ewms finish "$WF" | sed 's/^/    /'
FINISHED=1

all_complete() { [ "$(phases)" = "condor-complete condor-complete" ]; }
wait_for 60 "every taskforce to reach condor-complete" all_complete
wait_queues_deleted 30
timeout 30 ewms watch "$WF" --once | sed 's/^/    /'

# -- summary --------------------------------------------------------------------------------
py "$WORK/results.txt" "$N" "$T0" "$T_SUBMIT" "$T_PULLED" "$(date +%s.%N)" "$(phases)" <<'PY'
import sys
from collections import Counter
path, n, t0, t_submit, t_pulled, t_end, phases = sys.argv[1:]
n = int(n)
results = [int(line) for line in open(path) if line.strip()]
expected = [i * i + 1 for i in range(1, n + 1)]
print()
print("=== EWMS demo results ===")
print(f"results pulled      : {len(results)} (expected {n})")
if results:
    print(f"min / max / sum     : {min(results)} / {max(results)} / {sum(results)}"
          f" (expected {min(expected)} / {max(expected)} / {sum(expected)})")
print(f"submit -> all pulled: {float(t_pulled) - float(t_submit):.1f} s"
      f"; whole demo {float(t_end) - float(t0):.1f} s")
print(f"taskforce phases    : {phases}")
ok = Counter(results) == Counter(expected)
print("every result correct and exactly once:", "yes" if ok else "NO")
print()
sys.exit(0 if ok else 1)
PY
