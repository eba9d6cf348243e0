"""Every workflow in resources/examples runs end to end as shipped, the way the README runs it:
`ewms submit` of the file itself, a real `ewms-tms` with the `local` backend (each taskforce's
jobs under a uid of their own when the test may switch users, as root in CI), the real pilot,
`ewms push` of numbers.txt, `ewms pull --n 5`, `ewms finish`, every taskforce over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from ewms_client.client import EWMSClient
from ewms_server.testing import RunningServer
from tests.processes import stop_process
from tests.test_e2e_workflow import job_processes, kill_pids, start_tms, supervisor_pids
from tests.tms.isolation import ISOLATED, job_root, readable

from .cli import EXAMPLES, cli_env, ewms
from .conftest import SCHEDD

EXPECTED: dict[str, Callable[[int], int]] = {
    "square.json": lambda n: n * n,
    "square-warm.json": lambda n: n * n,
    "square-twice-chained.json": lambda n: n**4,
    "square-then-add-one.json": lambda n: n * n + 1,
}
# the jobs find `python3` on the TMS's PATH, which they get: there, one any job uid can run
JOBS_PATH = "/usr/local/bin:/usr/bin:/bin"


def test_every_example_has_its_expected_results() -> None:
    assert {p.name for p in EXAMPLES.glob("*.json")} == set(EXPECTED)


async def test_every_example_runs_end_to_end(srv: RunningServer, tmp_path: Path) -> None:
    examples = Path(readable("resources/examples"))  # a copy if the checkout is private
    jobs = Path(job_root(tmp_path.name)) / "jobs"
    tms = start_tms(
        srv, jobs, tmp_path / "tms.log", schedd=SCHEDD, extra_env={"PATH": JOBS_PATH} if ISOLATED else None
    )
    env = cli_env(srv)
    numbers = [int(line) for line in (examples / "numbers.txt").read_text().split()]
    client = EWMSClient(srv.url, srv.token(role="user", sub="alice"))
    uuids: set[str] = set()

    async def run_example(name: str) -> None:
        code, out, err = await ewms(env, "submit", "--json", str(examples / name))
        assert code == 0, f"{name}: {err}"
        created = json.loads(out)
        wf = created["workflow"]["workflow_id"]
        uuids.update(tf["taskforce_uuid"] for tf in created["taskforces"])
        code, _out, err = await ewms(env, "push", wf, "--lines", str(examples / "numbers.txt"))
        assert code == 0, f"{name}: {err}"
        n = str(len(numbers))
        code, out, err = await ewms(env, "pull", wf, "--out", "-", "--n", n, "--timeout", "120", timeout=240)
        if code != 0:
            _c, screen, _e = await ewms(env, "status", wf)
            raise AssertionError(f"{name}: {err}\n{screen}\n{(tmp_path / 'tms.log').read_text()[-3000:]}")
        assert sorted(int(r) for r in out.split()) == sorted(map(EXPECTED[name], numbers)), name

        code, out, err = await ewms(env, "finish", wf)
        assert code == 0, f"{name}: {err}"
        for _ in range(600):
            tfs = await asyncio.to_thread(client.taskforces, wf)
            if all(tf["phase"] == "condor-complete" for tf in tfs):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"{name}: taskforces not over: {[tf['phase'] for tf in tfs]}")
        for tf in tfs:  # every pilot ended well: no task failed, none died
            pilots = {p for by_pilot in tf["compound_statuses"].values() for p in by_pilot}
            assert "FatalError" not in pilots and not tf["top_task_errors"], (name, tf)

    try:
        async with asyncio.timeout(300):
            await asyncio.gather(*(run_example(name) for name in sorted(EXPECTED)))
        assert tms.poll() is None, "the TMS died"
    finally:
        stop_process(tms)
        kill_pids(supervisor_pids(jobs))
        kill_pids(job_processes(uuids))
        client.close()
