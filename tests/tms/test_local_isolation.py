"""The local backend's tenants (issue 9, finding 1): a uid per running taskforce, an
allow-listed environment, and clusters that always end in their event log."""

from __future__ import annotations

import glob
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import wait_until_sync
from tms.backends import local as local_mod
from tms.backends import local_users
from tms.backends.base import BackendError
from tms.backends.local import LocalBackend
from tms.config import ConfigError, from_env
from tms.submit import build_spec, prepare_job_dir

from .conftest import make_cfg, pending
from .isolation import ISOLATED, JOB_PYTHON

needs_root = pytest.mark.skipif(not ISOLATED, reason="switching users needs root or CAP_SETUID")


def spec_for(cfg: Any, uuid: str, n_workers: int = 1, **env: str) -> Any:
    p = pending(uuid=uuid, n_workers=n_workers)
    p["taskforce"]["pilot_config"]["environment"].update(env)
    spec, secrets = build_spec(
        cfg, p["taskforce"], p["task_directive"], p["mqprofiles"], runner="process", chirp="file"
    )
    prepare_job_dir(spec, secrets)
    return spec


def done(backend: LocalBackend, cluster: int) -> bool:
    return os.path.exists(os.path.join(backend.clusters_dir, f"{cluster}.done"))


def processes_of(uid: int) -> list[int]:
    """Live (not zombie) processes of ``uid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    with open(f"/proc/{entry.name}/stat", "rb") as f:
                        if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def record(backend: LocalBackend, cluster: int) -> dict[str, Any]:
    with open(backend.record_path(cluster)) as f:
        return json.load(f)  # type: ignore[no-any-return]


# --- the environment allow-list -----------------------------------------------------------------


def test_only_allow_listed_variables_reach_supervisors_and_jobs() -> None:
    tms_env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "EWMS_TMS_TOKEN": "tms-token",
        "EWMS_AUTH_SECRET": "server-secret",
        "EWMS_BROKER_URL": "amqp://admin:pw@mq/",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "ewms_tms_token": "lower-case too",
    }
    assert local_users.allowed_environment(tms_env, ["PATH", "LANG", "TZ"]) == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    # a list naming a TMS setting still never passes it
    assert local_users.allowed_environment(tms_env, ["EWMS_TMS_TOKEN", "ewms_tms_token"]) == {}
    with pytest.raises(ConfigError, match="EWMS_TMS_LOCAL_PASS_ENV: EWMS_TMS_TOKEN"):
        from_env(
            {
                "EWMS_TMS_SERVER_URL": "http://x",
                "EWMS_TMS_TOKEN": "t",
                "EWMS_TMS_LOCAL_PASS_ENV": "PATH,EWMS_TMS_TOKEN",
            }
        )


# --- uid allocation ---------------------------------------------------------------------------


def test_uid_allocation_round_robin_skips_used_and_accounts(tmp_path: Any) -> None:
    state = str(tmp_path)
    first = 3_900_000 + os.getpid() % 1000 * 100
    assert local_users.allocate_uid(state, first, first + 2, set()) == first
    assert local_users.allocate_uid(state, first, first + 2, set()) == first + 1  # not reused at once
    assert local_users.allocate_uid(state, first, first + 2, {first + 2}) == first  # wraps, skips used
    with pytest.raises(LookupError, match="in use"):
        local_users.allocate_uid(state, first, first + 2, {first, first + 1, first + 2})
    # an account of this machine is never taken
    nobody = pwd.getpwnam("nobody").pw_uid
    (tmp_path / "x").mkdir()
    assert local_users.allocate_uid(str(tmp_path / "x"), nobody, nobody + 1, set()) == nobody + 1


@needs_root
def test_a_uid_with_a_process_is_not_handed_out(tmp_path: Any) -> None:
    first = 3_950_000 + os.getpid() % 1000 * 10
    sleeper = subprocess.Popen(["sleep", "60"], user=first, group=first, extra_groups=[])
    try:
        wait_until_sync(lambda: processes_of(first), 30, what="the sleeper")
        assert local_users.allocate_uid(str(tmp_path), first, first + 1, set()) == first + 1
    finally:
        sleeper.kill()
        sleeper.wait()


# --- clusters under their own uids ----------------------------------------------------------------


@needs_root
async def test_each_taskforce_runs_as_its_own_uid_with_no_tms_secret(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("EWMS_TMS_TOKEN", "tms-token-MUST-NOT-LEAK")
    monkeypatch.setenv("EWMS_AUTH_SECRET", "server-secret-MUST-NOT-LEAK")
    cfg = make_cfg(tmp_path)
    backend = LocalBackend.from_config(cfg)
    assert backend.isolated
    specs = [spec_for(cfg, f"TF-{n}", n_workers=2, FAKE_PILOT_MODE="env") for n in ("A", "B")]
    clusters = [await backend.submit(s) for s in specs]
    for c in clusters:
        wait_until_sync(lambda c=c: done(backend, c), 30, what=f"cluster {c} to end")

    seen_uids = []
    for spec, cluster in zip(specs, clusters, strict=True):
        rec = record(backend, cluster)
        uid = rec["uid"]
        seen_uids.append(uid)
        assert cfg.local_uid_range[0] <= uid <= cfg.local_uid_range[1]
        for proc in (0, 1):
            with open(os.path.join(spec.job_dir, f"{cluster}.{proc}.out")) as f:
                dump = json.loads(next(line for line in f if line.startswith("ENV-DUMP ")).split(" ", 1)[1])
            assert (dump["uid"], dump["euid"], dump["gid"], dump["groups"]) == (uid, uid, uid, [])
            assert dump["cwd"] == rec["work_dir"] and dump["cwd_owner"] == uid and dump["cwd_mode"] == 0o700
            assert dump["auth_mqids"] == ["MQ-in", "MQ-out"]  # its own credentials it can read
            assert not [k for k in dump["environ"] if k.startswith(("EWMS_TMS", "EWMS_AUTH"))]
            assert "MUST-NOT-LEAK" not in json.dumps(dump)
            assert dump["environ"]["HOME"] == rec["work_dir"]
        # the job dir: the TMS's, passable (0711); its files the TMS's and private
        assert stat.S_IMODE(os.stat(spec.job_dir).st_mode) == 0o711
        for path in glob.glob(os.path.join(spec.job_dir, "*")):
            st = os.lstat(path)
            assert st.st_uid == 0 and not st.st_mode & 0o077, path
        # the cluster ended: the uid has nothing left (processes, work dir, auth file)
        assert not processes_of(uid)
        assert not os.path.exists(rec["work_dir"])
        assert not os.path.exists(spec.environment["EWMS_PILOT_QUEUE_AUTH_FILE"])
    assert seen_uids[0] != seen_uids[1]


@needs_root
async def test_a_uid_is_not_reused_while_its_cluster_runs(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path)
    first = cfg.local_uid_range[0]
    backend = LocalBackend(cfg.local_state_dir, cfg.local_job_command, uid_range=(first, first + 1))
    a = await backend.submit(spec_for(cfg, "TF-A", FAKE_PILOT_MODE="sleep"))
    b = await backend.submit(spec_for(cfg, "TF-B", FAKE_PILOT_MODE="sleep"))
    uid_a, uid_b = record(backend, a)["uid"], record(backend, b)["uid"]
    assert {uid_a, uid_b} == {first, first + 1}
    wait_until_sync(lambda: processes_of(uid_a) and processes_of(uid_b), 30, what="both jobs to run")
    with pytest.raises(BackendError, match="in use"):
        await backend.submit(spec_for(cfg, "TF-C", FAKE_PILOT_MODE="sleep"))
    await backend.remove(a, "test")
    wait_until_sync(lambda: done(backend, a), 30, what="cluster A to end")
    assert not processes_of(uid_a)
    c = await backend.submit(spec_for(cfg, "TF-C", FAKE_PILOT_MODE="sleep"))
    assert record(backend, c)["uid"] == uid_a  # free again only now
    for cluster in (b, c):
        await backend.remove(cluster, "test")
        wait_until_sync(lambda cluster=cluster: done(backend, cluster), 30, what="the clusters to end")


@needs_root
async def test_supervisor_and_job_environ_hold_no_tms_token(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("EWMS_TMS_TOKEN", "tms-token-MUST-NOT-LEAK")
    cfg = make_cfg(tmp_path)
    backend = LocalBackend.from_config(cfg)
    cluster = await backend.submit(spec_for(cfg, "TF-E", FAKE_PILOT_MODE="sleep"))
    uid = record(backend, cluster)["uid"]
    try:
        [supervisor] = wait_until_sync(backend.live_supervisors, 30, what="the supervisor")

        def environ(pid: int) -> bytes:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f.read()

        # the job once it runs the pilot (between fork and exec it still has the supervisor's)
        wait_until_sync(
            lambda: [p for p in processes_of(uid) if b"EWMS_PILOT" in environ(p)], 30, what="the job"
        )
        for pid in [supervisor, *processes_of(uid)]:
            assert b"MUST-NOT-LEAK" not in environ(pid) and b"EWMS_TMS_TOKEN" not in environ(pid)
    finally:
        await backend.remove(cluster, "test")
        wait_until_sync(lambda: done(backend, cluster), 30, what="the cluster to end")


def test_setup_problems_are_named(tmp_path: Any, monkeypatch: Any) -> None:
    cfg = make_cfg(tmp_path, local_single_tenant=False)
    if ISOLATED:
        ok = local_mod.setup_problems(cfg)
        assert ok == [], ok
        private = tmp_path / "private"  # under pytest's 0700 base directory
        bad = make_cfg(
            tmp_path,
            local_single_tenant=False,
            job_event_log_dir=str(private),
            local_job_command="/root/x -m y",
        )
        problems = local_mod.setup_problems(bad)
        assert any("EWMS_TMS_JOB_EVENT_LOG_DIR" in p and "not searchable" in p for p in problems), problems
        assert any("EWMS_TMS_LOCAL_JOB_COMMAND" in p for p in problems), problems
    monkeypatch.setattr(local_users, "can_switch_users", lambda: False)  # an unprivileged TMS
    [problem] = local_mod.setup_problems(cfg)
    assert "EWMS_TMS_LOCAL_SINGLE_TENANT=true" in problem
    assert local_mod.setup_problems(make_cfg(tmp_path, local_single_tenant=True)) == []


def test_job_command_must_be_runnable_by_others() -> None:
    assert local_users.runnable_by_others(f"{JOB_PYTHON} -c pass", "/usr/bin:/bin") is None
    if os.path.realpath(sys.executable).startswith("/root/"):
        why = local_users.runnable_by_others(f"{sys.executable} -m ewms_pilot", None)
        assert why and "/root is not searchable" in why
    assert "not found" in (local_users.runnable_by_others("no-such-program-xyz", "/usr/bin") or "")


# --- inputs that once killed the supervisor ------------------------------------------------------

BREAKERS: list[tuple[str, Callable[[Any], None], str]] = [
    (
        "nul-in-task-image",
        lambda s: s.environment.update(EWMS_PILOT_TASK_IMAGE="/bin/true\0x"),
        "embedded null byte",
    ),
    ("equals-in-env-name", lambda s: s.environment.update({"A=B": "1"}), "illegal environment variable name"),
]


def _break(spec: Any, change: Callable[[Any], None]) -> Any:
    change(spec)
    return spec


@pytest.mark.parametrize("change", [b[1] for b in BREAKERS], ids=[b[0] for b in BREAKERS])
async def test_unstartable_spec_is_a_failed_submit(tmp_path: Any, change: Any) -> None:
    cfg = make_cfg(tmp_path)
    backend = LocalBackend.from_config(cfg)
    with pytest.raises(BackendError, match=r"environment variable .*: empty name, '=' or NUL"):
        await backend.submit(_break(spec_for(cfg, "TF-X"), change))
    assert backend.live_supervisors() == [] and await backend.find_cluster("TF-X") is None


async def test_huge_memory_is_a_failed_submit(tmp_path: Any) -> None:
    import dataclasses

    cfg = make_cfg(tmp_path)
    backend = LocalBackend.from_config(cfg)
    spec = dataclasses.replace(spec_for(cfg, "TF-M"), memory_bytes=99999999999 << 40)
    with pytest.raises(BackendError, match="worker_memory"):
        await backend.submit(spec)


@pytest.mark.parametrize("change,reason", [b[1:] for b in BREAKERS], ids=[b[0] for b in BREAKERS])
async def test_supervisor_holds_what_it_cannot_start_and_still_ends(
    tmp_path: Any, monkeypatch: Any, change: Any, reason: str
) -> None:
    """Past the submit check (as from an older TMS): the job is held with the reason, and a
    remove ends the cluster -- no RUNNING job forever, no condor-rm forever."""
    monkeypatch.setattr(local_mod, "preflight", lambda spec, command: None)
    cfg = make_cfg(tmp_path)
    backend = LocalBackend.from_config(cfg)
    spec = _break(spec_for(cfg, "TF-H"), change)
    cluster = await backend.submit(spec)
    wait_until_sync(lambda: "Job was held" in read(spec.job_event_log_fpath), 30, what="the hold")
    text = read(spec.job_event_log_fpath)
    assert reason in text and "Job executing" in text
    await backend.remove(cluster, "abort")
    wait_until_sync(lambda: done(backend, cluster), 30, what="the cluster to end")
    text = read(spec.job_event_log_fpath)
    assert "Job was aborted" in text and "Cluster removed" in text


@needs_root
async def test_a_dead_supervisor_is_reaped(tmp_path: Any) -> None:
    cfg = make_cfg(tmp_path)
    backend = LocalBackend.from_config(cfg)
    spec = spec_for(cfg, "TF-K", n_workers=2, FAKE_PILOT_MODE="sleep")
    cluster = await backend.submit(spec)
    uid = record(backend, cluster)["uid"]
    [supervisor] = wait_until_sync(backend.live_supervisors, 30, what="the supervisor")
    wait_until_sync(lambda: len(processes_of(uid)) >= 2, 30, what="both jobs")
    os.kill(supervisor, signal.SIGKILL)
    wait_until_sync(lambda: not backend.live_supervisors(), 30, what="the supervisor to die")
    await backend.poll()  # the watcher's pass
    assert done(backend, cluster)
    text = read(spec.job_event_log_fpath)
    assert text.count("Job was aborted") == 2 and "the local supervisor died" in text
    assert text.rstrip().endswith("...") and "Cluster removed" in text
    wait_until_sync(lambda: not processes_of(uid), 10, what="its orphaned jobs to be gone")
    await backend.poll()
    assert read(spec.job_event_log_fpath) == text  # reaped once
