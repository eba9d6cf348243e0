"""`ewms submit` makes a request's relative task paths absolute against the request file's
directory, and refuses one that does not exist before anything is submitted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ewms_client.client import ClientError
from ewms_client.paths import is_container_image, is_local_path, resolve
from ewms_server.testing import RunningServer
from tests.tms.isolation import job_root

from .cli import EXAMPLES, cli_env, ewms, submit


def task(**fields: Any) -> dict[str, Any]:
    return {"task_image": "python3", "task_args": "", **fields}


@pytest.mark.parametrize(
    "word, is_path",
    [
        ("tasks/square.py", True),
        ("./run.sh", True),
        ("../data/x", True),
        ("python3", False),  # a program on the job's PATH
        ("square.py", False),  # no '/': written ./square.py when meant
        ("/abs/x.py", False),  # absolute already
        ("--out=dir/x", False),
        ("-v", False),
        ("docker://ghcr.io/x/y:1", False),
        ("ghcr.io/x/y:1", False),
        ("key=a/b", False),
    ],
)
def test_which_words_are_local_paths(word: str, is_path: bool) -> None:
    assert is_local_path(word) is is_path


@pytest.mark.parametrize(
    "image, container",
    [
        ("docker://ghcr.io/org/img", True),
        ("ghcr.io/org/img:1.0", True),
        ("/cvmfs/icecube.opensciencegrid.org/containers/x", True),
        ("/data/img.sif", True),
        ("python3", False),
        ("/usr/bin/python3", False),
        ("./run.sh", False),
    ],
)
def test_which_images_are_containers(image: str, container: bool) -> None:
    assert is_container_image(image) is container


def test_relative_paths_resolve_against_the_base(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.py").write_text("")
    (tmp_path / "run.sh").write_text("")
    request = {
        "tasks": [
            task(task_args="-S tasks/t.py --n 3 'two words'", init_image="./run.sh", init_args="x"),
            task(task_image="ghcr.io/org/img:1.0", task_args="data/in.txt"),  # the container's paths
        ],
        "public_queue_aliases": [],
    }
    out, _warnings = resolve(request, tmp_path)
    first, second = out["tasks"]
    assert first["task_args"] == f"-S {tmp_path}/tasks/t.py --n 3 'two words'"
    assert first["init_image"] == f"{tmp_path}/run.sh" and first["init_args"] == "x"
    assert second == request["tasks"][1]
    assert request["tasks"][0]["task_args"] == "-S tasks/t.py --n 3 'two words'"  # not modified


def test_a_missing_path_is_refused_naming_the_task_and_the_base(tmp_path: Path) -> None:
    with pytest.raises(ClientError) as e:
        resolve({"tasks": [task(), task(task_args="tasks/nope.py")]}, tmp_path)
    assert str(e.value).startswith(
        f"task 2 task_args: tasks/nope.py does not exist (relative paths resolve against {tmp_path}"
    )


def test_files_other_users_cannot_read_are_warned_about(tmp_path: Path) -> None:
    tmp_path = Path(job_root(tmp_path.name))  # a directory other users can pass through
    (tmp_path / "private.py").write_text("")
    (tmp_path / "private.py").chmod(0o600)
    (tmp_path / "open.py").write_text("")
    (tmp_path / "open.py").chmod(0o644)
    _out, warnings = resolve({"tasks": [task(task_args="./private.py ./open.py")]}, tmp_path)
    assert len(warnings) == 1
    assert "private.py: it is not readable by other users (chmod o+r)" in warnings[0]
    assert "task 1 task_args" in warnings[0]


def test_malformed_requests_are_left_to_the_server() -> None:
    requests: list[Any] = [{"tasks": "x"}, [], {"tasks": [None, task(task_args="'unbalanced")]}]
    for request in requests:
        assert resolve(request, Path("/")) == (request, [])


async def test_submit_resolves_against_the_file_from_any_directory(
    srv: RunningServer, tmp_path: Path
) -> None:
    env = cli_env(srv)
    code, out, err = await ewms(env, "submit", "--json", str(EXAMPLES / "square.json"), cwd=tmp_path)
    assert code == 0, err
    (directive,) = json.loads(out)["task_directives"]
    assert directive["task_args"] == str(EXAMPLES / "tasks" / "square.py")

    # as written with --keep-paths
    code, out, err = await ewms(env, "submit", "--json", "--keep-paths", str(EXAMPLES / "square.json"))
    assert code == 0, err
    assert json.loads(out)["task_directives"][0]["task_args"] == "tasks/square.py"

    # from stdin: against the current directory
    shutil.copytree(EXAMPLES / "tasks", tmp_path / "tasks")
    request = (EXAMPLES / "square.json").read_bytes()
    code, out, err = await ewms(env, "submit", "--json", "-", stdin=request, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["task_directives"][0]["task_args"] == str(tmp_path / "tasks" / "square.py")
    # pytest's tmp dirs are private: the local backend's job uids could not read the script
    assert f"{tmp_path / 'tasks' / 'square.py'}: " in err and "not searchable by other users" in err


async def test_a_missing_task_path_submits_nothing(srv: RunningServer, tmp_path: Path) -> None:
    env = cli_env(srv)
    request = json.loads((EXAMPLES / "square.json").read_text())
    (tmp_path / "wf.json").write_text(json.dumps(request))  # tasks/square.py is not beside it
    code, out, err = await ewms(env, "submit", str(tmp_path / "wf.json"))
    assert code == 1 and out == ""
    assert err == (
        f"ewms: error: task 1 task_args: tasks/square.py does not exist (relative paths resolve "
        f"against {tmp_path}, the request file's directory; see ewms submit --help)\n"
    )
    code, out, err = await ewms(env, "list")
    assert code == 0 and "WF-" not in out, out

    wf = await submit(env, EXAMPLES / "square.json")  # beside the example it exists
    assert wf.startswith("WF-")
