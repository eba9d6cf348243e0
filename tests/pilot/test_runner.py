"""Task runners: the process runner for real, container command lines as built."""

from __future__ import annotations

import sys

import pytest

from ewms_pilot.config import Command
from ewms_pilot.runner import Runner, TaskFailed, build_argv, task_env


def py(code: str, **env: str) -> Command:
    return Command(sys.executable, f"-c {code!r}", env)


async def test_process_runner_passes_input_env_and_reads_output(tmp_path) -> None:  # type: ignore
    code = (
        "import os; d = open(os.environ['EWMS_TASK_INFILE'], 'rb').read(); "
        "open(os.environ['EWMS_TASK_OUTFILE'], 'wb').write(d[::-1] + os.environ['X'].encode())"
    )
    out = await Runner("process", str(tmp_path)).run_task(py(code, X="!"), b"abc", None)
    assert out == b"cba!"
    assert list(tmp_path.iterdir()) == []  # the task dir is removed


async def test_nonzero_exit_reports_the_last_stderr_line(tmp_path) -> None:  # type: ignore
    with pytest.raises(TaskFailed, match=r"^task exit code 4: second$"):
        await Runner("process", str(tmp_path)).run_task(
            py("import sys; print('first\\nsecond', file=sys.stderr); sys.exit(4)"), b"", None
        )


async def test_missing_output_and_missing_program_fail(tmp_path) -> None:  # type: ignore
    r = Runner("process", str(tmp_path))
    with pytest.raises(TaskFailed, match="wrote no EWMS_TASK_OUTFILE"):
        await r.run_task(py("pass"), b"", None)
    with pytest.raises(TaskFailed, match="cannot start /no/such/program"):
        await r.run_task(Command("/no/such/program", "", {}), b"", None)


async def test_timeout_kills_the_task(tmp_path) -> None:  # type: ignore
    with pytest.raises(TaskFailed, match=r"timed out after 0\.3 s"):
        await Runner("process", str(tmp_path)).run_task(py("import time; time.sleep(30)"), b"", 0.3)


async def test_the_auth_file_location_is_not_passed_to_tasks(tmp_path, monkeypatch) -> None:  # type: ignore
    monkeypatch.setenv("EWMS_PILOT_QUEUE_AUTH_FILE", "/secret/auth.json")
    code = (
        "import os; open(os.environ['EWMS_TASK_OUTFILE'], 'w')"
        ".write(os.environ.get('EWMS_PILOT_QUEUE_AUTH_FILE', 'absent'))"
    )
    assert await Runner("process", str(tmp_path)).run_task(py(code), b"", None) == b"absent"


def test_container_runners_bind_the_task_dir_at_the_same_path() -> None:
    cmd = Command("img:1", "--flag 'two words'", {"A": "1"})
    env = task_env(cmd, "/scratch/t")
    docker = build_argv("docker", cmd, "/scratch/t", env, "n1")
    assert docker[:2] == ["docker", "run"]
    assert "type=bind,source=/scratch/t,target=/scratch/t" in docker
    assert docker[-3:] == ["img:1", "--flag", "two words"]
    assert "EWMS_TASK_INFILE=/scratch/t/in" in docker and "A=1" in docker
    app = build_argv("apptainer", cmd, "/scratch/t", env, "n1")
    assert app[:2] == ["apptainer", "run"] and "/scratch/t:/scratch/t" in app
    assert app[-3:] == ["img:1", "--flag", "two words"]
    assert "EWMS_TASK_OUTFILE=/scratch/t/out" in app
    assert build_argv("process", cmd, "/x", env, "n") == ["img:1", "--flag", "two words"]
