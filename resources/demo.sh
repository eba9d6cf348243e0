#!/usr/bin/env bash
# One-command demo: a whole EWMS workflow on this machine, end to end.
#
#   RabbitMQ on loopback (installed / started / management plugin enabled if needed)
#   -> `ewms-server standalone`: the server (the embedded SQLite store in the temp dir, a free
#      port, a random signing secret) with its local-backend TMS (each HTCondor job is an
#      `ewms-pilot` process here)
#   -> `ewms` CLI: submit resources/examples/square-then-add-one.json, push 100 numbers,
#      pull 100 results, finish the workflow, wait for every taskforce to end
#   -> Ctrl-C the standalone server, and check it left no broker object of the workflow.
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
SERVER_PID="" WF="" FINISHED="" RABBIT_STARTED=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$WF" ] && [ -z "$FINISHED" ] && [ -n "$SERVER_PID" ]; then
        say "aborting workflow $WF"
        timeout 20 "${EWMS[@]}" abort "$WF" >/dev/null 2>&1
    fi
    stop_server  # its stop removes the broker objects of ended workflows
    if [ -n "$WF" ] && ! broker_objects_gone "$WF" 2>/dev/null; then
        delete_broker_objects  # the server could not: remove its broker user and vhost
    fi
    # local clusters outlive their TMS (as HTCondor jobs do): stop any that are left
    for pid_file in "$WORK"/tms-jobs/.local-schedd/clusters/*.pid; do
        [ -e "$pid_file" ] || continue
        local pid; pid="$(cat "$pid_file")"
        if [ ! -e "${pid_file%.pid}.done" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
        fi
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
        say "FAILED (exit $rc); logs in $WORK (server.log: the server's and TMS's, tms-jobs/)" >&2
        tail -n 8 "$WORK/server.log" 2>/dev/null | sed 's/^/    /' >&2
    fi
    exit "$rc"
}
stop_server() {  # SIGINT, as Ctrl-C: the TMS stops, then the server
    [ -n "$SERVER_PID" ] || return 0
    kill -INT "$SERVER_PID" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    local rc=$?
    SERVER_PID=""
    return "$rc"
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
# this checkout's code (PYTHONPATH), whatever version is installed; its dependencies if missing
PY="$(python3 -c 'import sys; print(sys.executable)')"  # the interpreter, not a shim
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import ewms_server.server, tms.app, ewms_client.commands, ewms_pilot.pilot' >/dev/null 2>&1; then
    say "installing the project's dependencies (pip install .)"
    "$PY" -m pip install -q --disable-pip-version-check "$REPO"
fi

py() { "$PY" - "$@"; }
EWMS=("$PY" -m ewms_client)  # this checkout's `ewms` CLI
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$(( $(date +%s) + $1 )) what="$2"; shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "timed out waiting for $what"
        sleep 0.5
    done
}
broker_objects_gone() { py "$BROKER_URL" "$1" <<'PY'
import os, sys, requests
from urllib.parse import quote
from ewms_server.broker.rabbitmq import RabbitMQSettings, username_for, vhost_for
s = RabbitMQSettings.from_env({**os.environ, "EWMS_BROKER_URL": sys.argv[1]})
api = s.management_url.rstrip("/") + "/api"
paths = [f"/users/{quote(username_for(sys.argv[2]), safe='')}", f"/vhosts/{vhost_for(sys.argv[2])}"]
sys.exit(0 if all(requests.get(api + p, auth=s.admin_auth, timeout=5).status_code == 404 for p in paths) else 1)
PY
}
delete_broker_objects() { py "$BROKER_URL" "$WF" <<'PY'
import os, sys, requests
from ewms_server.broker.rabbitmq import RabbitMQSettings, leftover_paths
s = RabbitMQSettings.from_env({**os.environ, "EWMS_BROKER_URL": sys.argv[1]})
api = s.management_url.rstrip("/") + "/api"
for path in leftover_paths(sys.argv[2]):
    requests.delete(api + path, auth=s.admin_auth, timeout=5)
PY
}

# -- ewms-server standalone: the server and its local-backend TMS ---------------------------
PORT="$(py <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
PY
)"
# As root the local backend runs each taskforce's jobs under a uid of their own: they need a
# pilot and a task interpreter any user can run, and a way through $WORK to their directories.
if [ "$(id -u)" = 0 ]; then
    say "preparing a pilot runtime any job uid can run (resources/pilot-venv.sh)"
    bash "$REPO/resources/pilot-venv.sh" /opt/ewms-pilot-venv >/dev/null
    chmod 711 "$WORK"
    TMS_LOCAL=(EWMS_TMS_LOCAL_JOB_COMMAND="/opt/ewms-pilot-venv/bin/python -m ewms_pilot")
    TASK_PY=/usr/bin/python3
else
    TMS_LOCAL=(EWMS_TMS_LOCAL_SINGLE_TENANT=true)  # one user: every task trusted alike
    TASK_PY="$PY"
fi
say "starting ewms-server standalone on port $PORT (broker $(echo "$BROKER_URL" | sed 's#//[^@]*@#//#'))"
env "${TMS_LOCAL[@]}" EWMS_BROKER_URL="$BROKER_URL" EWMS_REST_PORT="$PORT" \
    EWMS_DATA_DIR="$WORK/data" EWMS_LOOP_INTERVAL_S=1 \
    EWMS_TMS_JOB_EVENT_LOG_DIR="$WORK/tms-jobs" EWMS_TMS_STARTER_INTERVAL=0.2 \
    EWMS_TMS_STOPPER_INTERVAL=0.5 EWMS_TMS_WATCHER_INTERVAL=0.5 EWMS_TMS_TRACKER_INTERVAL=2 \
    "$PY" -m ewms_server standalone </dev/null >"$WORK/standalone.out" 2>"$WORK/server.log" &
SERVER_PID=$!
# not on a terminal, it keeps its export line in a file of ours only (0600)
env_file_ready() { kill -0 "$SERVER_PID" && [ -s "$WORK/data/standalone.env" ]; }
wait_for 60 "ewms-server standalone to start" env_file_ready
# shellcheck disable=SC1091
source "$WORK/data/standalone.env"  # export EWMS_URL=... EWMS_TOKEN=...
say "serving $EWMS_URL"

# -- the workflow ---------------------------------------------------------------------------
# the example names `python3` and scripts relative to itself; this copy lives elsewhere, so
# make both absolute (ewms submit resolves relative paths against the file's directory)
py "$REPO" "$WORK/workflow.json" "$TASK_PY" <<'PY'
import json, sys
repo, out, python = sys.argv[1:]
wf = json.load(open(f"{repo}/resources/examples/square-then-add-one.json"))
for t in wf["tasks"]:
    t["task_image"] = python
    t["task_args"] = f"{repo}/resources/examples/{t['task_args']}"
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

timeout 30 "${EWMS[@]}" submit --json "$WORK/workflow.json" >"$WORK/submitted.json"
WF="$(py "$WORK/submitted.json" <<'PY'
import json, sys; print(json.load(open(sys.argv[1]))["workflow"]["workflow_id"])
PY
)"
say "submitted workflow $WF: numbers -> square -> add one -> results (2 tasks, 2 pilots each)"
T_SUBMIT=$(date +%s.%N)
timeout 90 "${EWMS[@]}" push "$WF" --lines "$WORK/numbers.txt" --wait 60 2>&1 | sed 's/^/    /'
say "pulling $N results"
timeout 120 "${EWMS[@]}" pull "$WF" --out - --n "$N" --timeout 90 --wait 60 \
    >"$WORK/results.txt" 2>"$WORK/pull.err" || { cat "$WORK/pull.err" >&2; die "pull failed"; }
T_PULLED=$(date +%s.%N)
timeout 30 "${EWMS[@]}" watch "$WF" --once | sed 's/^/    /'

say "finishing the workflow"
timeout 30 "${EWMS[@]}" finish "$WF" | sed 's/^/    /'
FINISHED=1

all_complete() { [ "$(phases)" = "condor-complete condor-complete" ]; }
wait_for 60 "every taskforce to reach condor-complete" all_complete
timeout 30 "${EWMS[@]}" status "$WF" | sed 's/^/    /'
PHASES="$(phases)"

say "stopping ewms-server standalone (SIGINT, as Ctrl-C)"
stop_server || die "ewms-server standalone did not stop cleanly (exit $?)"
if broker_objects_gone "$WF"; then LEFTOVERS=none; else LEFTOVERS=SOME; fi

# -- summary --------------------------------------------------------------------------------
py "$WORK/results.txt" "$N" "$T0" "$T_SUBMIT" "$T_PULLED" "$(date +%s.%N)" "$PHASES" "$LEFTOVERS" <<'PY'
import sys
from collections import Counter
path, n, t0, t_submit, t_pulled, t_end, phases, leftovers = sys.argv[1:]
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
print(f"broker objects left : {leftovers} (after the stop)")
ok = Counter(results) == Counter(expected) and leftovers == "none"
print("every result correct and exactly once:", "yes" if ok else "NO")
print()
sys.exit(0 if ok else 1)
PY
