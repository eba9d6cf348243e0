"""Watcher over real htcondor2.JobEventLog reading of hand-written and generated HTCondor logs."""

from __future__ import annotations

import os
import shutil
from typing import Any

from tms.backends import eventlog_writer as w
from tms.backends.base import IdleReport
from tms.jobstate import parse_chirp
from tms.tracking import Registry
from tms.watcher import HoldPolicy, Watcher, WatcherDeps

from .fakes import RecordingClient
from .gen_event_log import generate

SMALL = os.path.join(os.path.dirname(__file__), "fixtures", "small.log")
MEM_HOLD = (
    "Error from slot1_2@node18.example.org: Job has gone over cgroup memory limit of 512 megabytes. "
    "Last measured usage: 530 megabytes."
)


class RecordingBackend:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int | None]] = []

    async def release(self, cluster_id: int, proc: int) -> None:
        self.calls.append(("release", cluster_id, proc))

    async def remove(self, cluster_id: int, reason: str, proc: int | None = None) -> None:
        self.calls.append(("remove", cluster_id, proc))

    async def resubmit(self, cluster_id: int, proc: int, memory_bytes: int) -> None:
        self.calls.append(("resubmit", cluster_id, proc))
        self.memory = memory_bytes

    async def set_quarantine(self, machines: set[str]) -> None:
        self.quarantined = machines

    async def poll(self) -> None:
        self.calls.append(("poll", 0, None))

    async def explain_idle(self, idle: dict[int, list[int]], n_running: int) -> dict[int, IdleReport]:
        self.calls.append(("explain_idle", len(idle), n_running))
        return {
            c: IdleReport({"not yet matched": len(procs)}, matches=(0, len(procs)))
            for c, procs in idle.items()
        }


def make_watcher(
    client: Any, backend: Any = None, policy: HoldPolicy | None = None
) -> tuple[Watcher, Registry]:
    reg = Registry()
    return Watcher(
        WatcherDeps(client, backend or RecordingBackend(), reg, 0.1, policy or HoldPolicy(2, 1e12), batch=7)
    ), reg


def test_parse_chirp() -> None:
    assert parse_chirp('HTChirpEWMSPilotStatus: "Tasking"') == ("Status", "Tasking")
    assert parse_chirp('HTChirpEWMSPilotTasksTotal: "12"') == ("TasksTotal", "12")
    assert parse_chirp('HTChirpEWMSPilotError: "cut off here') == ("Error", "cut off here")
    assert parse_chirp('HTChirpEWMSPilotError: "say "hi""') == ("Error", 'say "hi"')
    assert parse_chirp("HTChirpEWMSPilotStatus: Tasking") is None
    assert parse_chirp("something else") is None


async def test_small_fixture_exact_statuses(tmp_path: Any) -> None:
    log = str(tmp_path / "small.log")
    shutil.copy(SMALL, log)
    client = RecordingClient()
    watcher, reg = make_watcher(client)
    reg.track("TF-A", 4242, 3, log)
    reg.track("TF-B", 4243, 1, log)
    await watcher.pass_once()
    [(statuses, errors)] = client.named("send_statuses")
    assert statuses == {
        "TF-A": {"COMPLETED": {"Done": 1}, f"HELD: {MEM_HOLD}": {"Tasking": 1}, "IDLE": {"None": 1}},
        "TF-B": {"COMPLETED": {"FatalError": 1}},
    }
    long_error = "Traceback (most recent call last): " + "E" * (
        1023 - 39 - 24 - 35
    )  # line cut at 1,023 chars
    assert errors == {"TF-A": {"TaskFailed: exit code 2": 1}, "TF-B": {long_error: 1}}
    # 4243 is gone (cluster removed) -> condor-complete; 4242 still has live jobs
    assert client.named("confirm_complete") == ["TF-B"]
    assert set(reg.by_uuid) == {"TF-A"}
    # nothing changed: nothing sent again
    await watcher.pass_once()
    assert len(client.named("send_statuses")) == 1
    # the log grows: the truncated tail is completed, job 2 ends
    with open(log, "a") as f:
        f.write('tus: "Done"\n...\n')
        f.write(w.terminated(4242, 2, exit_code=0))
        f.write(w.aborted(4242, 1, "via condor_rm (by user ewms)"))
    await watcher.pass_once()
    statuses, errors = client.named("send_statuses")[-1]
    assert statuses == {"TF-A": {"COMPLETED": {"Done": 2}, "REMOVED": {"Tasking": 1}}}
    assert errors == {"TF-A": {"TaskFailed: exit code 2": 1}}
    assert client.named("confirm_complete") == ["TF-B", "TF-A"]
    assert reg.by_uuid == {}


async def test_generated_log_exact_statuses(tmp_path: Any) -> None:
    log = str(tmp_path / "gen.log")
    expected = generate(log, n_events=30_000, n_jobs=600, jobs_per_cluster=200, seed=11)
    assert expected["events"] >= 20_000
    client = RecordingClient()
    watcher, reg = make_watcher(client)
    for i, cluster in enumerate(sorted(expected["statuses"])):
        reg.track(f"TF-{i}", cluster, 200, log)
    # batch=7 (make_watcher) forces many batches over the same readers
    await watcher.pass_once()
    statuses, errors = client.named("send_statuses")[0]
    for i, cluster in enumerate(sorted(expected["statuses"])):
        assert statuses[f"TF-{i}"] == expected["statuses"][cluster]
        assert errors[f"TF-{i}"] == expected["errors"].get(cluster, {})
    held = sum(
        n for s in statuses.values() for k, v in s.items() if k.startswith("HELD: ") for n in v.values()
    )
    assert held > 0  # the log really has jobs left held


async def test_corrupt_events_are_skipped(tmp_path: Any) -> None:
    log = str(tmp_path / "c.log")
    with open(log, "w") as f:
        f.write(w.submit(9, 0) + w.submit(9, 1))
        f.write("garbage that is no event\n...\n")
        f.write("005 (009.000.000) 2024-13-45 99:99:99 Job terminated.\n\tnonsense\n...\n")
        f.write(w.execute(9, 0) + w.generic(9, 0, 'HTChirpEWMSPilotStatus: "Tasking"'))
        f.write("\x00\x01binary junk\n...\n")
        f.write(w.execute(9, 1))
    client = RecordingClient()
    watcher, reg = make_watcher(client)
    reg.track("TF-C", 9, 2, log)
    await watcher.pass_once()
    await watcher.pass_once()
    statuses, _ = client.named("send_statuses")[-1]
    assert statuses == {"TF-C": {"RUNNING": {"None": 1, "Tasking": 1}}}


async def test_rotation_is_noticed_per_pass(tmp_path: Any) -> None:
    log = str(tmp_path / "r.log")
    with open(log, "w") as f:
        f.write(w.submit(3, 0) + w.execute(3, 0))
    client = RecordingClient()
    watcher, reg = make_watcher(client)
    reg.track("TF-R", 3, 1, log)
    await watcher.pass_once()
    os.rename(log, log + ".old")
    with open(log, "w") as f:
        f.write(w.held(3, 0, "rotated hold", 1, 0))
    await watcher.pass_once()
    statuses, _ = client.named("send_statuses")[-1]
    assert statuses == {"TF-R": {"HELD: rotated hold": {"None": 1}}}


async def test_hold_policy_releases_then_removes(tmp_path: Any) -> None:
    log = str(tmp_path / "h.log")
    with open(log, "w") as f:
        f.write(w.submit(5, 0) + w.execute(5, 0) + w.held(5, 0, "transfer failed", 13, 0, ts=1000))
    client, backend = RecordingClient(), RecordingBackend()
    watcher, reg = make_watcher(client, backend, HoldPolicy(max_releases=1, delay=60))
    reg.track("TF-H", 5, 1, log)
    await watcher.read_logs()
    await watcher.apply_hold_policy(now=1030)  # too early
    assert backend.calls == []
    await watcher.apply_hold_policy(now=1061)
    await watcher.apply_hold_policy(now=1062)  # acted once per hold
    assert backend.calls == [("release", 5, 0)]
    with open(log, "a") as f:
        f.write(w.released(5, 0) + w.execute(5, 0) + w.held(5, 0, "transfer failed", 13, 0, ts=2000))
    await watcher.read_logs()
    await watcher.apply_hold_policy(now=2061)
    assert backend.calls == [("release", 5, 0), ("remove", 5, 0)]


def test_chirp_lines_written_by_the_pilot_parse_back() -> None:
    """The seam between ewms_pilot (writer) and the watcher (reader)."""
    from ewms_pilot.chirp import chirp_line
    from tms.jobstate import parse_chirp

    for value in ["Tasking", 'say "hi"', "back\\slash\\", "two\nlines", "tab\tx", "z" * 2000]:
        attr, got = parse_chirp(chirp_line("Error", value)) or ("", "")
        assert attr == "Error"
        assert got == value if len(value) < 900 else value.startswith(got) and len(got) > 900
