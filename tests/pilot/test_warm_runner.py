"""The warm runner with real worker processes: reuse, failures, restarts, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ewms_pilot.config import Command
from ewms_pilot.runner import TaskFailed
from ewms_pilot.warm_protocol import INLINE_MAX
from ewms_pilot.warm_runner import WarmRunner, worker_command
from tests.conftest import wait_until

HERE = Path(__file__).parent
WARM_TASK = str(HERE / "warm_task.py")
RAW_WORKER = str(HERE / "raw_worker.py")


def task(script: str = WARM_TASK, **env: str) -> Command:
    return Command(sys.executable, script, env)


def pid_of(output: bytes) -> int:
    return int(output.rsplit(b" by ", 1)[1])


def alive(pid: int) -> bool:
    """Running (a zombie is not: an orphan waits for whoever reaps orphans here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[WarmRunner]:
    r = WarmRunner("process", str(tmp_path), start_timeout=30)
    yield r
    await r.close()
    assert list(tmp_path.iterdir()) == []  # every worker dir removed


async def test_one_worker_serves_task_after_task(runner: WarmRunner) -> None:
    outputs = [await runner.run_task(task(), str(i).encode(), None) for i in range(5)]
    assert [o.split(b" by ")[0] for o in outputs] == [b"0", b"1", b"2", b"3", b"4"]
    assert len({pid_of(o) for o in outputs}) == 1


async def test_binary_payloads_survive_inline_and_as_files(runner: WarmRunner, tmp_path: Path) -> None:
    for body in (bytes(range(256)) * 3, os.urandom(INLINE_MAX * 4)):
        out = await runner.run_task(task(), body, None)
        assert out[: len(body)] == body
    (worker_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in worker_dir.iterdir()) == []  # task files removed, socket too


async def test_a_failed_task_keeps_its_worker(runner: WarmRunner) -> None:
    first = pid_of(await runner.run_task(task(), b"a", None))
    with pytest.raises(TaskFailed, match=r"^task failed: ValueError: failing on purpose$"):
        await runner.run_task(task(), b"fail", None)
    assert pid_of(await runner.run_task(task(), b"b", None)) == first


async def test_a_worker_that_dies_mid_task_fails_it_and_is_replaced(runner: WarmRunner) -> None:
    first = pid_of(await runner.run_task(task(), b"a", None))
    with pytest.raises(TaskFailed) as info:
        await runner.run_task(task(), b"crash", None)
    assert str(info.value) == "warm worker died during the task (exit code 7): crashing on purpose"
    second = pid_of(await runner.run_task(task(), b"b", None))
    assert second != first and not alive(first)


async def test_a_worker_that_died_while_idle_is_replaced_without_failing_a_task(runner: WarmRunner) -> None:
    first = pid_of(await runner.run_task(task(), b"a", None))
    os.kill(first, 9)
    (idle,) = runner._idle
    await wait_until(lambda: idle.exited, 20, what="the idle worker to exit")
    assert pid_of(await runner.run_task(task(), b"b", None)) != first


async def test_garbage_on_the_protocol_fails_the_task_and_replaces_the_worker(
    runner: WarmRunner, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    raw = task(RAW_WORKER, TEST_PID_DIR=str(pids))
    assert await runner.run_task(raw, b"ok", None) == b"ok"
    with pytest.raises(TaskFailed) as info:
        await runner.run_task(raw, b"garbage", None)
    assert str(info.value) == "warm worker broke the protocol: reply is not JSON: 'this is not json'"
    assert await runner.run_task(raw, b"ok again", None) == b"ok again"
    first, second = sorted(pids.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert not alive(int(first.name)) and alive(int(second.name))
    for p in list(pids.iterdir()):
        p.unlink()
    pids.rmdir()


async def test_a_worker_that_dies_is_noticed_even_if_a_child_keeps_its_socket_open(
    runner: WarmRunner,
) -> None:
    with pytest.raises(TaskFailed, match=r"^warm worker died during the task \(exit code 5\)$"):
        await asyncio.wait_for(runner.run_task(task(RAW_WORKER), b"orphan", None), 20)
    assert await runner.run_task(task(RAW_WORKER), b"next", None) == b"next"


async def test_an_outfile_symlink_is_never_followed(runner: WarmRunner, tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("queue token")
    try:
        with pytest.raises(
            TaskFailed, match=r"^warm worker task file 1\.out: Too many levels of symbolic links$"
        ):
            await runner.run_task(task(RAW_WORKER, TEST_SECRET=str(secret)), b"symlink", None)
    finally:
        secret.unlink()


async def test_a_task_past_its_timeout_kills_the_worker(runner: WarmRunner, tmp_path: Path) -> None:
    hold, busy = tmp_path / "hold", tmp_path / "busy"
    busy.mkdir()
    hold.touch()
    slow = task(TEST_HOLD=str(hold), TEST_BUSY_DIR=str(busy))
    with pytest.raises(TaskFailed, match=r"^task timed out after 0\.3 s$"):
        await runner.run_task(slow, b"a", 0.3)
    (marker,) = busy.iterdir()
    killed = int(marker.name.removeprefix("busy-"))
    assert not alive(killed)
    hold.unlink()
    marker.unlink()
    busy.rmdir()
    assert pid_of(await runner.run_task(slow, b"b", 5)) != killed


async def test_a_cancelled_task_kills_its_worker(runner: WarmRunner, tmp_path: Path) -> None:
    hold, busy = tmp_path / "hold", tmp_path / "busy"
    busy.mkdir()
    hold.touch()
    running = asyncio.create_task(
        runner.run_task(task(TEST_HOLD=str(hold), TEST_BUSY_DIR=str(busy)), b"a", None)
    )
    await wait_until(lambda: any(busy.iterdir()), 20, what="a busy marker")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    (marker,) = busy.iterdir()
    assert not alive(int(marker.name.removeprefix("busy-")))
    for p in (hold, marker):
        p.unlink()
    busy.rmdir()


@pytest.mark.parametrize(
    "cmd, message",
    [
        (Command("/no/such/program", "", {}), "cannot start /no/such/program: No such file or directory"),
        (
            Command(sys.executable, "-c 'import sys; sys.exit(\"boom\")'", {}),
            "warm worker exited before it was ready (exit code 1): boom",
        ),
        (task(RAW_WORKER, TEST_HELLO='{"ewms_warm": 9}'), "warm worker broke the protocol: hello speaks"),
    ],
)
async def test_a_worker_that_never_gets_ready_fails_the_task(
    runner: WarmRunner, cmd: Command, message: str
) -> None:
    with pytest.raises(TaskFailed) as info:
        await runner.run_task(cmd, b"x", None)
    assert str(info.value).startswith(message)


async def test_a_worker_that_never_connects_is_killed_after_the_start_timeout(tmp_path: Path) -> None:
    r = WarmRunner("process", str(tmp_path), start_timeout=1)
    with pytest.raises(TaskFailed, match=r"^warm worker not ready after 1 s$"):
        await r.run_task(Command(sys.executable, "-c 'import time; time.sleep(60)'", {}), b"x", None)
    await r.close()
    assert list(tmp_path.iterdir()) == []


async def test_concurrent_tasks_get_one_worker_each_and_close_ends_them(tmp_path: Path) -> None:
    r = WarmRunner("process", str(tmp_path), start_timeout=30)
    outputs = await asyncio.gather(*(r.run_task(task(), b"%d" % i, None) for i in range(3)))
    pids = {pid_of(o) for o in outputs}
    assert len(pids) == 3
    more = await asyncio.gather(*(r.run_task(task(), b"%d" % i, None) for i in range(3)))
    assert {pid_of(o) for o in more} == pids  # reused, not restarted
    await r.close()
    assert not any(alive(p) for p in pids) and list(tmp_path.iterdir()) == []


async def test_a_long_work_dir_path_still_works(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 110)
    deep.mkdir()
    r = WarmRunner("process", str(deep), start_timeout=30)
    try:
        assert (await r.run_task(task(), b"deep", None)).startswith(b"deep by ")
    finally:
        await r.close()


async def test_the_auth_file_location_is_not_passed_to_workers(runner: WarmRunner, monkeypatch) -> None:  # type: ignore
    monkeypatch.setenv("EWMS_PILOT_QUEUE_AUTH_FILE", "/secret/auth.json")
    code = (
        "-c 'import os; from ewms_pilot.worker import serve; "
        'serve(lambda d: os.environ.get("EWMS_PILOT_QUEUE_AUTH_FILE", "absent"))\''
    )
    assert await runner.run_task(Command(sys.executable, code, {}), b"", None) == b"absent"


def test_container_workers_bind_their_dir_and_get_the_socket_by_env() -> None:
    cmd = Command("img:1", "--flag 'two words'", {"A": "1"})
    argv, env = worker_command("docker", cmd, "/scratch/w", "n1")
    assert argv[:2] == ["docker", "run"] and "type=bind,source=/scratch/w,target=/scratch/w" in argv
    assert "EWMS_WARM_SOCKET=/scratch/w/w.sock" in argv and "A=1" in argv
    assert "-i" not in argv and argv[-3:] == ["img:1", "--flag", "two words"]
    argv, _ = worker_command("apptainer", cmd, "/scratch/w", "n1")
    assert argv[:2] == ["apptainer", "run"] and "/scratch/w:/scratch/w" in argv
    assert "EWMS_WARM_SOCKET=/scratch/w/w.sock" in argv and argv[-3:] == ["img:1", "--flag", "two words"]
    argv, env = worker_command("process", cmd, "/scratch/w", "n1")
    assert argv == ["img:1", "--flag", "two words"]
    assert env == {"A": "1", "EWMS_WARM_SOCKET": "/scratch/w/w.sock"}
