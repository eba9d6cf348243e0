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


def _session_root() -> str:
    global _ROOT
    if _ROOT is None:
        _ROOT = tempfile.mkdtemp(prefix="ewms-tms-tests-", dir="/tmp")
        os.chmod(_ROOT, 0o711)
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


def job_root(name: str) -> str:
    """A directory per test name that job uids can pass through (pytest's tmp_path sits
    under a 0700 one)."""
    path = os.path.join(_session_root(), name)
    os.makedirs(path, mode=0o711, exist_ok=True)
    os.chmod(path, 0o711)
    return path


def readable(rel: str) -> str:
    """``REPO/rel`` when job uids can read it there, else a copy they can (a checkout under
    a private directory, e.g. /root)."""
    src = REPO / rel
    if _others_can_read(src):
        return str(src)
    dst = Path(_session_root()) / "code" / rel
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
        code = Path(_session_root()) / "code"
        subprocess.run(["chmod", "-R", "a+rX", str(code)], check=True)  # python lists its path
    return str(dst)


def _others_can_read(path: Path) -> bool:
    from tms.backends.local_users import private_ancestor

    probe = path / "__init__.py" if (path / "__init__.py").exists() else path
    return private_ancestor(str(probe)) is None and bool(os.stat(probe).st_mode & 0o004)


def pilot_command() -> str:
    """The real pilot, runnable by any uid: resources/pilot-venv.sh's Python (built here if
    missing) running this tree's ewms_pilot."""
    subprocess.run(["bash", str(REPO / "resources" / "pilot-venv.sh"), PILOT_VENV], check=True)
    code = os.path.dirname(readable("ewms_pilot"))
    return f"env PYTHONPATH={code} {PILOT_VENV}/bin/python -m ewms_pilot"
