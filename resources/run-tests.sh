#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian machine and run the whole test suite.
# Idempotent: safe to run again. Used by .ci/run and quoted in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# -- RabbitMQ on loopback, with the management API (per-workflow users and permissions) -----
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends rabbitmq-server
fi
if ! as_root rabbitmqctl -q status >/dev/null 2>&1; then
    as_root rabbitmq-server -detached
fi
for _ in $(seq 1 60); do
    as_root rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
done
as_root rabbitmq-plugins -q enable rabbitmq_management >/dev/null
for _ in $(seq 1 60); do
    python3 - <<'PY' && break
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 15672)) == 0 else 1)
PY
    sleep 1
done

# -- Debian's chromium for the browser tests (tests/server/test_dashboard.py drives it through
#    Playwright; never `playwright install`: no browser download). With its recommended fonts,
#    so the screenshots the tests save show text. EWMS_TEST_CHROMIUM names another browser. ----
if [ -z "${EWMS_TEST_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q chromium
fi

# -- Python 3.12 for tests/pilot/test_published_pilot.py (EWMS's ewms-pilot 1.0.5 needs it; the
#    test makes and caches its own venv from PyPI) --------------------------------------------
if ! ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 >/dev/null 2>&1 \
    && ! command -v python3.12 >/dev/null 2>&1 && [ -z "${EWMS_TEST_PYTHON312:-}" ]; then
    as_root apt-get update -q
    if ! DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
        python3.12 python3.12-venv; then
        python3 -m pip install -q --disable-pip-version-check uv  # a standalone CPython 3.12
        python3 -m uv python install 3.12
        EWMS_TEST_PYTHON312="$(python3 -m uv python find 3.12)"
        export EWMS_TEST_PYTHON312
    fi
fi

# -- Python packages from setup.cfg ---------------------------------------------------------
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

# -- a pilot runtime any uid can run: the local backend's jobs run under uids of their own ----
# (Debian's python3 + python3-venv, installed if missing; the tests run this tree's pilot in it)
bash resources/pilot-venv.sh "${EWMS_TEST_PILOT_VENV:-/opt/ewms-pilot-venv}"

# -- static checks: lint, format, types (configured in pyproject.toml) ------------------------
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy

# -- the suite ------------------------------------------------------------------------------
exec python3 -m pytest -q "$@"
