#!/usr/bin/env bash
# A Python environment any user can run the pilot with: the local backend runs each
# taskforce's jobs under a uid of their own, which cannot use a private interpreter (e.g.
# one under /root). Idempotent: does nothing when the environment already holds the pilot's
# current requirements.
#
#   bash resources/pilot-venv.sh [DIR]     # default /opt/ewms-pilot-venv
#
# The pilot's runtime dependencies are setup.cfg's `pilot` extra (read by
# resources/component-requirements.py); the pilot code itself comes from PYTHONPATH (the
# tests point it at the tree under test) or from `DIR/bin/pip install --no-deps .`. Then:
#   EWMS_TMS_LOCAL_JOB_COMMAND="DIR/bin/python -m ewms_pilot"
set -euo pipefail
VENV="${1:-/opt/ewms-pilot-venv}"
PY="${EWMS_PILOT_VENV_PYTHON:-/usr/bin/python3}"
HERE="$(cd "$(dirname "$0")" && pwd)"
STAMP="$VENV/.ewms-pilot-requirements"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

WANT="$("$PY" "$HERE/component-requirements.py" pilot)"
mapfile -t DEPS <<<"$WANT"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then  # Debian splits venv out
        as_root apt-get update -q
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
            "python3-venv" "python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    fi
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${DEPS[@]}"
printf '%s\n' "$WANT" >"$STAMP"
chmod -R a+rX "$VENV"
