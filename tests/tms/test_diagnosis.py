"""Task counts, evictions, holds and idle reasons: from real event logs (written in HTCondor's
format, read by htcondor2) to the statuses report, and the backends' idle explanations
(HTCondor's through a fake Schedd, the local backend's for real)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import htcondor2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tms.backends import eventlog_writer as w
from tms.backends.base import BackendError, IdleReport
from tms.backends.htcondor import HTCondorBackend
from tms.backends.local import LocalBackend
from tms.diagnosis import NO_MATCH, NOT_YET, OVER_SHARE, UNREACHABLE, diagnosis, idle_reason
from tms.jobstate import ClusterState
from tms.metrics import TmsMetrics
from tms.submit import TASKFORCE_ATTR
from tms.tracking import Registry
from tms.watcher import HoldPolicy, Watcher, WatcherDeps

from .fakes import FakeSchedd, RecordingClient
from .test_watcher import RecordingBackend

MEMORY = "Job has gone over cgroup memory limit of 512 megabytes."


def chirp(cluster: int, proc: int, attr: str, value: object) -> str:
    return w.generic(cluster, proc, f'HTChirpEWMSPilot{attr}: "{value}"')


def write(path: Path, *records: str) -> None:
    with open(path, "a") as f:
        f.write("".join(records))


def watcher_for(
    client: RecordingClient, backend: Any = None, policy: HoldPolicy | None = None, **kw: Any
) -> tuple[Watcher, Registry]:
    reg = Registry()
    deps = WatcherDeps(client, backend or RecordingBackend(), reg, 0.1, policy or HoldPolicy(2, 60), **kw)
    return Watcher(deps), reg


def last_report(client: RecordingClient) -> tuple[dict[str, Any], dict[str, Any]]:
    counts, diagnoses = client.named("send_statuses_extra")[-1]
    return counts, diagnoses


async def test_task_counts_survive_pilot_restarts_and_ended_jobs(tmp_path: Path) -> None:
    log = tmp_path / "tf.log"
    write(log, *(w.submit(7, p) for p in range(2)), w.execute(7, 0), w.execute(7, 1))
    write(log, chirp(7, 0, "TasksSuccess", 5), chirp(7, 0, "TasksFailed", 1), chirp(7, 1, "TasksSuccess", 2))
    client = RecordingClient()
    watcher, reg = watcher_for(client)
    reg.track("TF-A", 7, 2, str(log))
    await watcher.pass_once()
    counts, diagnoses = last_report(client)
    assert counts == {"TF-A": {"succeeded": 7, "failed": 1}}
    assert diagnoses["TF-A"]["jobs"] == {"idle": 0, "running": 2, "held": 0, "ended": 0}
    # job 0 is evicted: its pilot restarts from zero, but what it did before still counts
    write(log, w.evicted(7, 0), w.execute(7, 0), chirp(7, 0, "TasksSuccess", 3))
    # job 1 ends after 4 tasks and one failure
    write(log, chirp(7, 1, "TasksSuccess", 4), chirp(7, 1, "TasksFailed", 1), w.terminated(7, 1))
    await watcher.pass_once()
    counts, diagnoses = last_report(client)
    assert counts == {"TF-A": {"succeeded": 5 + 3 + 4, "failed": 1 + 1}}
    assert diagnoses["TF-A"]["n_evictions"] == 1
    assert diagnoses["TF-A"]["jobs"] == {"idle": 0, "running": 1, "held": 0, "ended": 1}
    # nothing new: nothing sent
    n = len(client.named("send_statuses"))
    await watcher.pass_once()
    assert len(client.named("send_statuses")) == n


async def test_held_jobs_say_what_the_hold_policy_does_next(tmp_path: Path) -> None:
    log = tmp_path / "tf.log"
    write(log, *(w.submit(9, p) for p in range(3)), *(w.execute(9, p) for p in range(3)))
    write(log, w.held(9, 0, MEMORY, 34, 2, ts=1000.0), w.held(9, 1, "runtime", 47, 0, ts=1000.0))
    client, backend = RecordingClient(), RecordingBackend()
    watcher, reg = watcher_for(client, backend, HoldPolicy(max_releases=1, delay=60))
    tracked = reg.track("TF-H", 9, 3, str(log), memory_bytes=512 << 20)
    tracked.state.job(1).n_released = 1  # released once already: next time it is removed  # type: ignore[union-attr]
    await watcher.read_logs()
    await watcher.send_statuses()
    held = last_report(client)[1]["TF-H"]["held"]
    # over its memory: resubmitted with 1.5x (not released unchanged); the other: removed
    assert [(h["proc"], h["code"], h["subcode"], h["next_action"], h["next_memory_mb"]) for h in held] == [
        (0, 34, 2, "resubmit", 768),
        (1, 47, 0, "remove", None),
    ]
    assert held[0]["reason"] == MEMORY and held[0]["next_action_ts"] == pytest.approx(held[0]["since"] + 60)
    assert held[1]["n_released"] == 1
    # the policy acts (its delay is long past): the diagnosis says it did
    await watcher.apply_hold_policy()
    assert ("resubmit", 9, 0) in backend.calls and ("remove", 9, 1) in backend.calls
    assert backend.memory == 768 << 20
    await watcher.send_statuses()
    diag = last_report(client)[1]["TF-H"]
    assert [(h["next_action"], h["next_action_ts"]) for h in diag["held"]] == [("none", None), ("none", None)]
    assert sorted((d["proc"], d["action"], d["memory_mb"]) for d in diag["hold_decisions"]) == [
        (0, "resubmit", 768),
        (1, "remove", None),
    ]


async def test_statuses_are_sent_in_chunks(tmp_path: Path) -> None:
    log = tmp_path / "many.log"
    write(log, *(w.submit(c, 0) for c in range(100, 112)))
    client = RecordingClient()
    watcher, reg = watcher_for(client, report_chunk=5)
    for c in range(100, 112):
        reg.track(f"TF-{c}", c, 1, str(log))
    await watcher.pass_once()
    sizes = [len(statuses) for statuses, _ in client.named("send_statuses")]
    assert sizes == [5, 5, 2]
    # every chunk carries the idle explanation the backend gave
    _, diagnoses = last_report(client)
    assert diagnoses["TF-111"]["idle_reasons"] == {NOT_YET: 1}
    assert diagnoses["TF-111"]["matches"] == {"ever_matched": 0, "never_matched": 1}


def test_idle_reasons_follow_the_negotiators_words() -> None:
    assert idle_reason("no match found", 0) == NO_MATCH
    assert idle_reason("insufficient priority", 3) == OVER_SHARE
    assert idle_reason("submitter limit exceeded", 1) == OVER_SHARE
    assert idle_reason("concurrency limit DB reached", 1) == OVER_SHARE
    assert idle_reason(None, 0) == NOT_YET
    assert idle_reason("", 2) == "matched, waiting to start"
    assert idle_reason("PREEMPTION_REQUIREMENTS == False", 0) == "PREEMPTION_REQUIREMENTS == False"


async def test_htcondor_explains_idle_jobs_from_the_schedds_job_ads() -> None:
    fake = FakeSchedd()
    backend = HTCondorBackend("schedd.test", schedd_factory=lambda _: fake)
    uuid_attr = {f"MY.{TASKFORCE_ATTR}": '"TF-1"', "executable": "/bin/true"}
    cluster = fake.submit(htcondor2.Submit(uuid_attr), count=4).cluster()
    other = fake.submit(htcondor2.Submit({"executable": "/bin/true"}), count=1).cluster()  # not EWMS's
    ads = {p: fake.jobs[(cluster, p)] for p in range(4)}
    ads[0].update(NumJobMatches=0, LastRejMatchReason="no match found")
    ads[1].update(NumJobMatches=2, LastRejMatchReason="insufficient priority")
    ads[2].update(NumJobMatches=0)
    ads[3]["JobStatus"] = 2  # running: HTCondor is ahead of the event log, not counted
    reports = await backend.explain_idle({cluster: [0, 1, 2, 3], other: [0]}, n_running=0)
    assert reports[cluster] == IdleReport({NO_MATCH: 1, OVER_SHARE: 1, NOT_YET: 1}, matches=(1, 2))
    assert reports[other] == IdleReport({}, matches=(0, 0))
    # a schedd that cannot be reached: said so, for every idle job
    fake.fail_next = htcondor2.HTCondorException("SECMAN:2007:Failed to end classad message")
    reports = await backend.explain_idle({cluster: [0, 1, 2]}, n_running=0)
    assert reports[cluster].reasons == {UNREACHABLE: 3}
    assert reports[cluster].error and "Failed to end classad message" in reports[cluster].error
    with pytest.raises(BackendError):  # the other calls still raise, as before
        fake.fail_next = htcondor2.HTCondorException("down")
        await backend.find_cluster("TF-1")


async def test_local_backend_knows_its_slots_and_supervisors(tmp_path: Path) -> None:
    backend = LocalBackend(str(tmp_path / "state"), "true")
    (Path(backend.clusters_dir) / "5.pid").write_text(str(os.getpid()))  # not a supervisor
    reports = await backend.explain_idle({5: [0, 1]}, n_running=3)
    # the default machine: a slot per CPU, none taken in its slot table
    assert reports[5] == IdleReport({"supervisor not running": 2}, slots=(os.cpu_count() or 1, 0))


def test_diagnosis_of_a_quiet_cluster_is_small_and_valid() -> None:
    from ewms_server.schema import OpenAPI

    state = ClusterState(3, 2)
    state.apply(w_type("SUBMIT"), 0)
    d = diagnosis(state, HoldPolicy(), "htcondor", IdleReport({NOT_YET: 1}, matches=(0, 1)), 5.0)
    OpenAPI().check_body("/v1/tms/statuses/taskforces", "POST", {"diagnosis_by_taskforce": {"TF-1": d}})
    assert d["idle_reasons"] == {NOT_YET: 1} and d["slots"] is None and d["error"] is None


def w_type(name: str) -> int:
    from tms import jobstate

    return int(getattr(jobstate, name))


async def test_metrics_endpoint_serves_jobs_lag_and_failures(tmp_path: Path) -> None:
    log = tmp_path / "tf.log"
    write(log, *(w.submit(4, p) for p in range(3)), w.execute(4, 0), w.held(4, 1, "x", 1, 0))
    client = RecordingClient()
    metrics = TmsMetrics()
    watcher, reg = watcher_for(client, metrics=metrics)
    reg.track("TF-M", 4, 3, str(log))
    await watcher.pass_once()
    metrics.submit_failures.inc()
    server = metrics.serve("127.0.0.1", 0)
    try:
        port = server.server_address[1]
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("ewms_tms_clusters", ())] == 1
    jobs = {dict(k[1])["state"]: v for k, v in values.items() if k[0] == "ewms_tms_jobs"}
    assert jobs == {"idle": 1, "running": 1, "held": 1, "ended": 0}
    assert values[("ewms_tms_watcher_lag_bytes", ())] == 0  # read to the end
    assert values[("ewms_tms_submit_failures_total", ())] == 1
    # bytes written after the last read are lag
    write(log, w.terminated(4, 0))
    behind = watcher._lag()
    assert behind[0] == len(w.terminated(4, 0)) and behind[1] >= 0


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()
