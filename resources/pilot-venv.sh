#!/usr/bin/env bash
# A Python environment any user can run the pilot with: the local backend runs each
# taskforce's jobs under a uid of their own, which cannot use a private interpreter (e.g.
# one under /root). Idempotent: does nothing when the environment is already there.
#
#   bash resources/pilot-venv.sh [DIR]     # default /opt/ewms-pilot-venv
#
# The pilot's runtime dependencies go in; the pilot code itself comes from PYTHONPATH (the
# tests point it at the tree under test) or from `DIR/bin/pip install --no-deps .`. Then:
#   EWMS_TMS_LOCAL_JOB_COMMAND="DIR/bin/python -m ewms_pilot"
set -euo pipefail
VENV="${1:-/opt/ewms-pilot-venv}"
PY="${EWMS_PILOT_VENV_PYTHON:-/usr/bin/python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# the pilot's runtime dependencies (setup.cfg's install_requires that ewms_pilot imports)
DEPS=("pika>=1.3" "zstd>=1.5")

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import pika, zstd" 2>/dev/null; then
    exit 0
fi
if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then  # Debian splits venv out
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
        "python3-venv" "python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
fi
"$PY" -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${DEPS[@]}"
chmod -R a+rX "$VENV"
