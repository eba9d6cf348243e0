"""Simulated machines (the local backend, for real), machines read from job event logs, the
counts per machine the TMS reports, and the quarantine applied by both backends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import htcondor2
import pytest

from tests.conftest import wait_until
from tms.backends import eventlog_writer as w
from tms.backends import machines as mc
from tms.backends.htcondor import HTCondorBackend
from tms.backends.local import LocalBackend
from tms.config import ConfigError, from_env
from tms.jobstate import EVICTED, EXECUTE, HELD, RECONNECT_FAILED, SHADOW_EXCEPTION, ClusterState, machine_of
from tms.submit import build_spec, prepare_job_dir
from tms.watcher import HoldPolicy

from .conftest import make_cfg, pending
from .fakes import FakeSchedd, RecordingClient
from .test_diagnosis import chirp, watcher_for, write

# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "[]",
        "{}",
        "not json",
        '{"m1": {"slots": 0}}',
        '{"m1": {"slots": 2.5}}',
        '{"m1": {"slots": 1, "broken": "yes"}}',
        '{"m1": {"slots": 1, "colour": "red"}}',
        '{"*": {"slots": 1}}',
        '{"m 1": {"slots": 1}}',
        '{"m1": {"slots": 1, "broken": true, "fail_after_s": -1}}',
    ],
)
def test_a_bad_machines_setting_is_a_config_error_naming_it(value: str) -> None:
    with pytest.raises(ConfigError, match="EWMS_TMS_LOCAL_MACHINES"):
        from_env({"EWMS_TMS_SERVER_URL": "http://x", "EWMS_TMS_TOKEN": "t", "EWMS_TMS_LOCAL_MACHINES": value})


def test_machines_setting_and_its_default() -> None:
    cfg = from_env(
        {
            "EWMS_TMS_SERVER_URL": "http://x",
            "EWMS_TMS_TOKEN": "t",
            "EWMS_TMS_LOCAL_MACHINES": '{"m1": {"slots": 4}, "m2": {"slots": 4, "broken": true}}',
        }
    )
    assert cfg.local_machines == (mc.Machine("m1", 4), mc.Machine("m2", 4, True))
    (default,) = mc.default_machines()
    assert default.slots == (os.cpu_count() or 1) and not default.broken and default.name


# --- the local backend's machines, for real -----------------------------------------------------


def _submit_spec(tmp_path: Path, uuid: str, n: int) -> Any:
    cfg = make_cfg(tmp_path)
    p = pending(uuid=uuid, n_workers=n)
    p["taskforce"]["pilot_config"]["environment"]["FAKE_PILOT_MODE"] = "sleep"
    spec, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="process", chirp="file"
    )
    prepare_job_dir(spec, secrets)
    return cfg, spec


def _executions(log: str) -> list[tuple[int, str]]:
    """(proc, machine) of each execute event, read back by htcondor2 as the watcher reads it."""
    if not os.path.exists(log):
        return []
    return [
        (e.proc, machine_of(e.get("SlotName"), e.get("ExecuteHost")))
        for e in htcondor2.JobEventLog(log).events(0)
        if e.type == htcondor2.JobEventType.EXECUTE
    ]


def _job_pid(uuid: str, proc: int) -> int | None:
    for name in os.listdir("/proc"):
        env = _environ(name) if name.isdigit() else {}
        if env.get("EWMS_TASKFORCE_UUID") == uuid and env.get("PROC_ID") == str(proc):
            return int(name)
    return None


def _job_env(uuid: str, proc: int) -> dict[str, str]:
    pid = _job_pid(uuid, proc)
    return {} if pid is None else _environ(str(pid))


async def test_jobs_are_placed_on_free_slots_skip_quarantined_machines_and_leave_them(tmp_path: Path) -> None:
    cfg, spec = _submit_spec(tmp_path, "TF-M", 3)
    machines = (mc.Machine("a", 1), mc.Machine("b", 1, broken=True))
    backend = LocalBackend(
        cfg.local_state_dir,
        cfg.local_job_command,
        uid_range=None if cfg.local_single_tenant else cfg.local_uid_range,
        machines=machines,
    )
    cluster = await backend.submit(spec)
    log = spec.job_event_log_fpath
    try:
        # two slots: two jobs run, one on each machine; the third waits for a slot
        await wait_until(lambda: _async(len(_executions(log)) == 2), timeout=20)
        placed = dict(_executions(log))
        assert sorted(placed.values()) == ["a", "b"]
        idle = ({0, 1, 2} - set(placed)).pop()
        reports = await backend.explain_idle({cluster: [idle]}, 2)
        assert reports[cluster].reasons == {mc.NO_FREE_SLOT: 1} and reports[cluster].slots == (2, 2)
        # the job's environment names its machine; on the broken one every task fails at once
        on_b = next(p for p, m in placed.items() if m == "b")
        await wait_until(lambda: _async(bool(_job_env("TF-M", on_b))), timeout=10)
        env_b = _job_env("TF-M", on_b)
        assert env_b[mc.MACHINE_ENV] == "b" and env_b["EWMS_PILOT_TASK_IMAGE"] == "/bin/false"
        on_a = next(p for p, m in placed.items() if m == "a")
        env_a = _job_env("TF-M", on_a)
        assert env_a[mc.MACHINE_ENV] == "a" and env_a["EWMS_PILOT_TASK_IMAGE"] == "/bin/echo"

        # b quarantined: its job is evicted back to idle; nothing is placed there any more
        await backend.set_quarantine({"b", "not-ours"})
        await wait_until(lambda: _async("Job was evicted" in Path(log).read_text()), timeout=15)
        reports = await backend.explain_idle({cluster: [idle, on_b]}, 1)
        assert reports[cluster].reasons == {mc.NO_FREE_SLOT: 2} and reports[cluster].slots == (1, 1)
        # a slot of a frees: the next job runs there, never on b
        await backend.remove(cluster, "test", proc=on_a)
        await wait_until(lambda: _async(len(_executions(log)) == 3), timeout=15)
        assert _executions(log)[2][1] == "a"
        # every machine quarantined: the idle job says so
        await backend.set_quarantine({"a", "b"})
        await wait_until(lambda: _async(Path(log).read_text().count("Job was evicted") == 2), timeout=15)
        reports = await backend.explain_idle({cluster: [0, 1, 2]}, 0)
        assert reports[cluster].reasons == {mc.QUARANTINED: 3}
        # lifted: the jobs run again
        await backend.set_quarantine(set())
        await wait_until(lambda: _async(len(_executions(log)) == 5), timeout=15)
    finally:
        await backend.remove(cluster, "test")
        await wait_until(lambda: _async(not backend.live_supervisors()), timeout=20)
    assert not any(backend.slots.busy().values())  # every slot given back


async def _async(value: bool) -> bool:
    return value


def test_slot_table_frees_the_slots_of_dead_supervisors(tmp_path: Path) -> None:
    table = mc.SlotTable(str(tmp_path), [mc.Machine("a", 2), mc.Machine("b", 1)])
    assert table.acquire("1.0", os.getpid(), set()) == ("a", 1)  # most free slots first
    assert table.acquire("1.1", os.getpid(), set()) == ("a", 2)  # a tie: the first machine
    assert table.acquire("1.2", os.getpid(), {"b"}) == mc.NO_FREE_SLOT
    assert table.acquire("1.2", os.getpid(), {"*"}) == mc.QUARANTINED
    dead = 2**22 + 12345  # no such pid
    assert table.acquire("2.0", dead, set()) == ("b", 1)
    assert table.acquire("3.0", os.getpid(), set()) == ("b", 1)  # the dead holder's slot is free
    table.release("1.0")
    assert table.busy() == {"a": 1, "b": 1}


# --- machines in event logs, counts per machine --------------------------------------------------


def test_machine_of_reads_slot_names_aliases_and_addresses() -> None:
    assert machine_of("slot1_3@node17.example.org", "<10.0.0.2:9618>") == "node17.example.org"
    assert machine_of(None, "<10.0.0.3:9618?addrs=10.0.0.3-9618&alias=m2.example.org>") == "m2.example.org"
    assert machine_of(None, "<10.0.0.3:9618?addrs=10.0.0.3-9618>") == "10.0.0.3"
    assert machine_of("", "") == ""


async def test_counts_per_machine_from_a_real_event_log(tmp_path: Path) -> None:
    log = tmp_path / "tf.log"
    write(log, *(w.submit(4, p) for p in range(3)))
    write(log, w.execute(4, 0, slot_name="slot1@m2"), w.execute(4, 1, slot_name="slot2@m2"))
    write(log, w.execute(4, 2, slot_name="slot1@m1"))
    write(
        log,
        chirp(4, 0, "TasksFailed", 6),
        chirp(4, 1, "Status", "FatalError"),
        chirp(4, 2, "TasksSuccess", 3),
    )
    # job 0 is evicted from m2 and runs again on m1, where it succeeds; job 1 is held on m2
    write(log, w.evicted(4, 0), w.execute(4, 0, slot_name="slot2@m1"), chirp(4, 0, "TasksSuccess", 2))
    write(log, w.held(4, 1, "disk", 21, 0))
    client = RecordingClient()
    watcher, reg = watcher_for(client)
    reg.track("TF-4", 4, 3, str(log))
    await watcher.read_logs()
    await watcher.send_statuses()
    assert client.named("send_statuses_machines")[-1] == {
        "TF-4": {
            "m1": {"tasks_failed": 0, "fatal": 0, "held": 0, "succeeded": 5},
            "m2": {"tasks_failed": 6, "fatal": 1, "held": 1, "succeeded": 0},
        }
    }
    # the eviction is a reschedule: no failure counted for it anywhere
    _, diagnoses = client.named("send_statuses_extra")[-1]
    assert diagnoses["TF-4"]["n_evictions"] == 1


def test_reschedules_are_not_failures() -> None:
    state = ClusterState(1, 1)
    state.apply(EXECUTE, 0, machine="m1")
    for etype in (EVICTED, SHADOW_EXCEPTION, RECONNECT_FAILED):
        state.apply(etype, 0)
        state.apply(EXECUTE, 0, machine="m1")
    assert state.n_evictions == 3
    assert state.machine_counts() == {"m1": {"tasks_failed": 0, "fatal": 0, "held": 0, "succeeded": 0}}
    state.apply(HELD, 0, hold_reason="x", hold_code=13)
    assert state.machine_counts()["m1"]["held"] == 1


# --- the quarantine in submits and at the schedd ------------------------------------------------


def test_submits_exclude_quarantined_machines_in_their_requirements(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, site_requirements="(TARGET.HasCVMFS)")
    p = pending(condor_requirements="OpSysMajorVer == 9")
    spec, _ = build_spec(
        cfg,
        p["taskforce"],
        p["task_directive"],
        p["mqprofiles"],
        runner="apptainer",
        chirp="htcondor",
        exclude_machines={"m2", "*", 'we"ird'},
    )
    reqs = spec.submit_dict["requirements"]
    assert 'Machine isnt "m2"' in reqs and 'Machine isnt "we\\"ird"' in reqs and "HasCVMFS" in reqs
    assert "OpSysMajorVer" in reqs and "*" not in reqs
    htcondor2.classad.ExprTree(reqs)  # one well-formed expression


async def test_htcondor_vacates_jobs_on_quarantined_machines_and_resubmits_with_more_memory() -> None:
    schedd = FakeSchedd()
    backend = HTCondorBackend("s", schedd_factory=lambda name: schedd)
    for proc, host in enumerate(["slot1@m2.example.org", "slot3@m1.example.org"]):
        schedd.jobs[(7, proc)] = {
            "ClusterId": 7,
            "ProcId": proc,
            "JobStatus": 2,
            "EWMSTaskforceUUID": '"TF-7"',
            "RemoteHost": host,
            "Requirements": "(TARGET.HasCVMFS)",
        }
    await backend.set_quarantine({"m2.example.org"})
    assert schedd.edits == [
        ("7.0", "Requirements", '((TARGET.HasCVMFS)) && ((Machine isnt "m2.example.org"))')
    ]
    assert schedd.actions == [(htcondor2.JobAction.Vacate, "7.0", "EWMS: machine m2.example.org quarantined")]
    await backend.resubmit(7, 1, 768 << 20)
    assert schedd.edits[-1] == ("7.1", "RequestMemory", "768")
    assert schedd.actions[-1][:2] == (htcondor2.JobAction.Release, "7.1")


def test_memory_holds_grow_by_half_up_to_the_cap_then_remove() -> None:
    from tms.jobstate import JobState
    from tms.watcher import HoldPolicy

    policy = HoldPolicy(max_releases=2, delay=0, memory_cap=1000 << 20)
    job = JobState()
    job.hold_code, job.hold_reason = 34, "memory usage exceeded request_memory"
    assert policy.next_action(job, 512 << 20) == ("resubmit", 768 << 20)
    job.memory_bytes = 768 << 20  # resubmitted once: 1.5x again, but no more than the cap
    assert policy.next_action(job, 512 << 20) == ("resubmit", 1000 << 20)
    job.memory_bytes = 1000 << 20
    assert policy.next_action(job, 512 << 20) == ("remove", None)
    job.hold_code, job.hold_reason = 13, "Transfer input files failure"
    assert policy.next_action(job, 512 << 20) == ("release", None)
    job.hold_code, job.hold_reason = (
        None,
        "Error from slot1@n: Job has gone over cgroup memory limit of 512 megabytes.",
    )
    assert policy.next_action(job, 0) == ("remove", None)  # memory unknown: nothing to grow


async def test_a_memory_hold_in_the_log_is_resubmitted_at_the_schedd_with_more_memory(tmp_path: Path) -> None:
    schedd = FakeSchedd()
    schedd.jobs[(9, 0)] = {"ClusterId": 9, "ProcId": 0, "JobStatus": 5, "RequestMemory": "512"}
    backend = HTCondorBackend("s", schedd_factory=lambda name: schedd)
    log = tmp_path / "tf.log"
    write(log, w.submit(9, 0), w.execute(9, 0, slot_name="slot1@n1"))
    write(log, w.held(9, 0, "Job has gone over cgroup memory limit of 512 megabytes.", 34, 0, ts=1000.0))
    client = RecordingClient()
    watcher, reg = watcher_for(client, backend, HoldPolicy(max_releases=2, delay=60, memory_cap=1 << 30))
    reg.track("TF-9", 9, 1, str(log), memory_bytes=512 << 20)
    await watcher.read_logs()
    await watcher.apply_hold_policy()
    assert schedd.edits == [("9.0", "RequestMemory", "768")]
    assert [a[:2] for a in schedd.actions] == [(htcondor2.JobAction.Release, "9.0")]
    # held again at 768 MiB: next 1.5x is past the 1 GiB cap, so the cap
    write(log, w.released(9, 0), w.execute(9, 0, slot_name="slot1@n1"))
    write(log, w.held(9, 0, "memory usage exceeded request_memory", 34, 0, ts=2000.0))
    await watcher.read_logs()
    await watcher.apply_hold_policy()
    assert schedd.edits[-1] == ("9.0", "RequestMemory", "1024")
    await watcher.send_statuses()
    _, diagnoses = client.named("send_statuses_extra")[-1]
    assert [(d["action"], d["memory_mb"]) for d in diagnoses["TF-9"]["hold_decisions"]] == [
        ("resubmit", 768),
        ("resubmit", 1024),
    ]
    # the held job counts against its machine
    assert client.named("send_statuses_machines")[-1]["TF-9"]["n1"]["held"] == 2


async def test_the_local_backend_runs_a_resubmitted_job_with_its_new_memory(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    p = pending(uuid="TF-R", n_workers=1, max_worker_runtime=1)
    p["taskforce"]["pilot_config"]["environment"]["FAKE_PILOT_MODE"] = "sleep"
    spec, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="process", chirp="file"
    )
    prepare_job_dir(spec, secrets)
    backend = LocalBackend.from_config(cfg)
    cluster = await backend.submit(spec)
    log = Path(spec.job_event_log_fpath)
    try:  # held for its runtime (the only hold a local job gets), then resubmitted with 1 GiB
        await wait_until(lambda: _async("Job was held" in log.read_text()), timeout=20)
        await backend.resubmit(cluster, 0, 1 << 30)
        await wait_until(lambda: _async(len(_executions(str(log))) == 2), timeout=15)
        await wait_until(lambda: _async(bool(_job_env("TF-R", 0))), timeout=10)
        pid = _job_pid("TF-R", 0)
        with open(f"/proc/{pid}/limits") as f:
            limit = next(line for line in f if line.startswith("Max address space")).split()[3]
        assert int(limit) == 1 << 30
    finally:
        await backend.remove(cluster, "test")
        await wait_until(lambda: _async(not backend.live_supervisors()), timeout=20)


def _environ(pid: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return dict(kv.split("=", 1) for kv in f.read().decode(errors="replace").split("\0") if "=" in kv)
    except OSError:
        return {}
