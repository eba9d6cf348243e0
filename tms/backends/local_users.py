"""The local backend's tenants: one unprivileged uid per running taskforce, and what its jobs
may see of the TMS (an allow-listed environment, nothing else).

A job of one taskforce must not read another's queue credentials nor the TMS's token. With
root or CAP_SETUID+CAP_SETGID+CAP_CHOWN each taskforce's jobs run under their own uid (gid
alike, no supplementary groups) from a configured range, in a work directory only that uid
can read; a uid is never given to a second taskforce while a cluster or a process of the
first still uses it, and its processes and files are removed when its cluster ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Collection, Iterable, Mapping
from typing import Any

_CAP_CHOWN, _CAP_SETGID, _CAP_SETUID = 0, 6, 7


def can_switch_users() -> bool:
    """Root, or the capabilities that switching users and handing over files take."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return False
    return all(caps >> bit & 1 for bit in (_CAP_CHOWN, _CAP_SETGID, _CAP_SETUID))


def allowed_environment(environ: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """The only variables of the TMS's environment a supervisor or job gets: never an EWMS_*
    setting (the TMS token), whatever the list says."""
    return {n: environ[n] for n in names if n in environ and not n.upper().startswith("EWMS_")}


def uids_with_processes() -> set[int]:
    """Owners of every live process on this machine (a uid with one is never handed out)."""
    owners = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                uid = entry.stat().st_uid
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":  # a zombie does nothing
                        owners.add(uid)
    return owners


def allocate_uid(state_dir: str, first: int, last: int, in_use: Collection[int]) -> int:
    """The next uid of the range after the last one given, skipping ``in_use``, uids with a
    process and uids of existing accounts. Call it under the backend's submit lock."""
    import pwd

    busy = set(in_use) | uids_with_processes()
    path = os.path.join(state_dir, "next-uid")
    try:
        with open(path) as f:
            start = int(f.read().strip())
    except (OSError, ValueError):
        start = first
    size = last - first + 1
    for i in range(size):
        uid = first + (start - first + i) % size
        if uid in busy:
            continue
        try:
            pwd.getpwuid(uid)
            continue  # an account of this machine: not ours to take
        except KeyError:
            pass
        with open(path, "w") as f:
            f.write(str(uid + 1))
        return uid
    raise LookupError(f"every uid of {first}-{last} is in use")


@contextlib.contextmanager
def locked(path: str) -> Any:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


_RECLAIM = (
    # kill -1: every process this uid may signal, never the shell itself; until none is left
    "for i in 1 2 3 4 5 6 7 8; do kill -9 -1 2>/dev/null || break; done; "
    'chmod -R u+rwx -- "$1" 2>/dev/null; find "$1" -mindepth 1 -delete 2>/dev/null; exit 0'
)


def reclaim(uid: int, gid: int, work_dir: str) -> None:
    """End every process of ``uid`` and empty ``work_dir``, as that uid (no privilege is
    used on the files a job made). Blocking; run when a cluster has ended."""
    subprocess.run(
        ["/bin/sh", "-c", _RECLAIM, "ewms-reclaim", work_dir],
        user=uid,
        group=gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def private_ancestor(path: str) -> str | None:
    """The first directory on the way to ``path`` others cannot enter (o+x), or None."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(1, len(parts)):
        d = os.sep.join(parts[:i]) or os.sep
        with contextlib.suppress(FileNotFoundError):
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return d
    return None


def runnable_by_others(command: str, path_env: str | None) -> str | None:
    """Why a job user could not run ``command``'s program (and its #! interpreter), or None."""
    argv = shlex.split(command)
    if not argv:
        return "it is empty"
    program = shutil.which(argv[0], path=path_env) if os.sep not in argv[0] else argv[0]
    for _ in range(3):  # the program, its interpreter, the interpreter's interpreter
        if not program or not os.path.exists(program):
            return f"{argv[0]} is not found on the jobs' PATH"
        real = os.path.realpath(program)
        if blocked := private_ancestor(real):
            return f"{program}: {blocked} is not searchable by other users (chmod o+x, or move it)"
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return f"{program} is not executable by other users"
        try:
            with open(real, "rb") as f:
                head = f.read(256)
        except OSError as e:
            return f"{program}: {e.strerror}"
        if not head.startswith(b"#!"):
            return None
        if not os.stat(real).st_mode & stat.S_IROTH:
            return f"{program} (a script) is not readable by other users"
        shebang = head[2:].split(b"\n")[0].decode(errors="replace").split()
        if not shebang:
            return f"{program} has an empty #! line"
        program = (
            shutil.which(shebang[1], path=path_env)
            if shebang[0].endswith("/env") and len(shebang) > 1
            else shebang[0]
        )
    return None


def setup_problems(
    *, job_dir: str, job_command: str, pass_env: Mapping[str, str], single_tenant: bool
) -> list[str]:
    """What keeps the local backend from running, in words (empty: nothing)."""
    if single_tenant:
        return []
    if not can_switch_users():
        return [
            "the local backend runs each taskforce's jobs under a uid of its own "
            "(EWMS_TMS_LOCAL_UID_RANGE), which needs root or CAP_SETUID, CAP_SETGID and "
            "CAP_CHOWN; set EWMS_TMS_LOCAL_SINGLE_TENANT=true to run every job as this user "
            "instead (any task can then read every other's queue credentials)"
        ]
    problems = []
    if blocked := private_ancestor(os.path.join(job_dir, "x")):
        problems.append(
            f"EWMS_TMS_JOB_EVENT_LOG_DIR {job_dir}: {blocked} is not searchable by other users, "
            "so jobs under their own uids cannot reach their directories (choose e.g. "
            "/var/lib/ewms-tms/jobs)"
        )
    if why := runnable_by_others(job_command, pass_env.get("PATH")):
        problems.append(
            f"EWMS_TMS_LOCAL_JOB_COMMAND: jobs run under their own uids and cannot run it: {why} "
            "(resources/pilot-venv.sh makes a pilot any user can run)"
        )
    return problems
