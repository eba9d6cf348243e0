"""What tests of the local backend need to run it isolated (the test process is root here
and in CI): job directories other uids can reach, a fresh uid range, a pilot they can run."""

from __future__ import annotations

import atexit
import itertools
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ISOLATED = os.geteuid() == 0  # tests run the local backend as the TMS would: isolated when it can
JOB_PYTHON = "/usr/bin/python3"  # stdlib-only fake pilot and tasks: any uid can run Debian's
PILOT_VENV = os.environ.get("EWMS_TEST_PILOT_VENV", "/opt/ewms-pilot-venv")

# a block of uids of its own per test run (other suites may run on this machine at once)
_UIDS = itertools.count(3_000_000 + random.randrange(10_000) * 10_000, 50)
_ROOT: str | None = None


def uid_range() -> tuple[int, int]:
    first = next(_UIDS)
    return first, first + 49


def job_root(name: str) -> str:
    """A directory per test name that job uids can pass through (pytest's tmp_path sits
    under a 0700 one)."""
    global _ROOT
    if _ROOT is None:
        _ROOT = tempfile.mkdtemp(prefix="ewms-tms-tests-", dir="/tmp")
        os.chmod(_ROOT, 0o711)
        atexit.register(shutil.rmtree, _ROOT, True)
    path = os.path.join(_ROOT, name)
    os.makedirs(path, mode=0o711, exist_ok=True)
    os.chmod(path, 0o711)
    return path


def pilot_command() -> str:
    """The real pilot, runnable by any uid: resources/pilot-venv.sh's Python (built here if
    missing) running this tree's ewms_pilot (from PYTHONPATH)."""
    subprocess.run(["bash", str(REPO / "resources" / "pilot-venv.sh"), PILOT_VENV], check=True)
    return f"{PILOT_VENV}/bin/python -m ewms_pilot"
