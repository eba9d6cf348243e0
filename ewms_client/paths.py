"""Local paths in a workflow request, made absolute at submit.

A task's job runs in a directory of its own on the TMS's machine (the `local` backend: its
taskforce's work directory), so a relative path in `task_args` would resolve there and fail
only when the first task runs, long after `ewms submit` said yes. The CLI knows where the
request file is: relative paths resolve against its directory, and a path that is not there
is refused before anything is submitted.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path
from typing import Any

from .client import ClientError

COMMANDS = (("task_image", "task_args"), ("init_image", "init_args"))

RULES = """\
relative paths: in each task's task_image, task_args, init_image and init_args, a word (as
shlex splits it) that contains a '/', does not start with '/' or '-', and has no ':' or '='
is a local path: it resolves against the directory of FILE (the current directory for -),
becomes absolute, and must exist, else nothing is submitted. Other words (python3, --flag,
docker://..., key=value) are sent as written. Nothing is resolved for a container image
(docker://..., oras://..., a name with a :tag, a .sif file, a /cvmfs/ path) nor in its args,
which are the container's, nor with --keep-paths. The local backend runs each taskforce's
jobs under a uid of their own: the files must be readable by other users (o+r, and o+x on
every directory above them); ewms submit warns when they are not."""


def is_local_path(word: str) -> bool:
    return "/" in word and not word.startswith(("/", "-")) and not any(c in word for c in ":=")


def resolve(request: Any, base: Path) -> tuple[Any, list[str]]:
    """`request` with its tasks' relative paths made absolute against `base`, and warnings
    about files other users cannot read. A malformed request is returned as is: the server
    says what is wrong with it."""
    if not isinstance(request, dict) or not isinstance(request.get("tasks"), list):
        return request, []
    warnings: list[str] = []
    tasks = []
    for i, task in enumerate(request["tasks"], 1):
        if isinstance(task, dict):
            task = dict(task)
            for image, args in COMMANDS:
                if isinstance(task.get(image), str) and is_container_image(task[image]):
                    continue
                for field in (image, args):
                    if isinstance(task.get(field), str):
                        task[field] = _resolve_field(task[field], field, f"task {i}", base, warnings)
        tasks.append(task)
    return {**request, "tasks": tasks}, warnings


def is_container_image(image: str) -> bool:
    """An image for the docker or apptainer runner, not a program: its paths are inside it."""
    last = image.rstrip("/").rsplit("/", 1)[-1]
    return "://" in image or ":" in last or image.endswith(".sif") or image.startswith("/cvmfs/")


def _resolve_field(value: str, field: str, where: str, base: Path, warnings: list[str]) -> str:
    image = field.endswith("_image")  # one program, never split
    try:
        words = [value] if image else shlex.split(value)
    except ValueError:
        return value  # unbalanced quotes: the server refuses it
    changed = False
    for j, word in enumerate(words):
        if not is_local_path(word):
            continue
        path = os.path.normpath(base / word)
        if not os.path.exists(path):
            raise ClientError(
                f"{where} {field}: {word} does not exist (relative paths resolve against {base}, "
                "the request file's directory; see ewms submit --help)"
            )
        if why := _hidden_from_others(path, executable=image):
            warnings.append(
                f"{where} {field}: {path}: {why}; the local backend's jobs, which run under "
                "uids of their own, cannot use it"
            )
        words[j] = path
        changed = True
    if not changed:
        return value
    return words[0] if image else shlex.join(words)


def _hidden_from_others(path: str, *, executable: bool) -> str | None:
    """Why a user other than the owner could not read (or run) `path`, or None."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(1, len(parts)):
        d = os.sep.join(parts[:i]) or os.sep
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return f"{d} is not searchable by other users (chmod o+x)"
    mode = os.stat(real).st_mode
    if not mode & stat.S_IROTH:
        return "it is not readable by other users (chmod o+r)"
    if (executable or stat.S_ISDIR(mode)) and not mode & stat.S_IXOTH:
        return "other users cannot execute it (chmod o+x)"
    return None
