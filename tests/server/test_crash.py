"""Crash tests of the default store: a real `ewms-server` on a temporary EWMS_DATA_DIR is
SIGKILLed at random moments (once while it starts) and restarted on the same directory,
while users POST and abort workflows, a real `ewms-tms` (local backend) runs its taskforces,
and two TMSs driven by hand claim, submit, report statuses and completions for another
schedd. Afterwards: every write that got a 200 is in the store; nothing half-made is (every
workflow whole, no parts without their workflow; aborts finished by the repair sweeps); no
taskforce was offered twice while its lease ran, none got two clusters; the real TMS
carried on through every restart to condor-complete."""

from __future__ import annotations

import glob
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import wait_until_sync
from tests.processes import stop_process
from tests.tms.isolation import job_root, uid_range
from tests.tms.test_e2e_local import local_settings

from .server_process import REPO, Api, ServerProcess, free_port, token
from .tms_driver import Actor, HandTms, Ledger, Poster, offered_twice_within_lease

LEASE_S = 3.0
KILLS = 5
TMS_SCHEDD = "test-schedd"  # tests.tms' local settings
LOCATIONS = {"bulk": "bulk-schedd", "hand": "hand-schedd", "tms": TMS_SCHEDD}


def read_store(data_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every document of every collection, by id, read from the file itself."""
    ids = {
        "workflows": "workflow_id",
        "task_directives": "task_id",
        "taskforces": "taskforce_uuid",
        "mqprofiles": "mqid",
    }
    conn = sqlite3.connect(data_dir / "ewms.sqlite3", timeout=10)
    try:
        conn.execute("PRAGMA query_only = 1")
        return {
            coll: {d[key]: d for d in (json.loads(r[0]) for r in conn.execute(f'SELECT doc FROM "{coll}"'))}
            for coll, key in ids.items()
        }
    finally:
        conn.close()


def start_tms(url: str, jobs: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("EWMS_")},
        "PYTHONPATH": str(REPO),
        "EWMS_TMS_SERVER_URL": url,
        "EWMS_TMS_TOKEN": token("system-tms", "crash-tms", [TMS_SCHEDD]),
        **local_settings(jobs, uid_range()),
        "EWMS_TMS_STARTER_INTERVAL": "0.1",
        "EWMS_TMS_STOPPER_INTERVAL": "0.1",
        "EWMS_TMS_WATCHER_INTERVAL": "0.2",
        "EWMS_TMS_TRACKER_INTERVAL": "0.5",
        "EWMS_TMS_BACKOFF_MAX": "0.5",  # back soon after each restart
    }
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tms"], env=env, stdout=out, stderr=out, cwd=REPO)


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    jobs = os.path.join(job_root(tmp_path.name), "jobs")
    env = {
        "EWMS_CLUSTER_LOCATIONS": json.dumps(LOCATIONS),
        "EWMS_STARTER_LEASE_S": str(LEASE_S),
        "EWMS_LOOP_INTERVAL_S": "0.3",
        "EWMS_SUBMIT_RETRY_DELAY_S": "0",
    }
    srv = ServerProcess(tmp_path / "data", free_port(), tmp_path / "server.log", env)
    srv.start()
    tms = start_tms(srv.url, jobs, tmp_path / "tms.log")
    port = lambda: srv.port  # noqa: E731
    ledger = Ledger()
    bulk = [Poster(f"bulk-{i}", port, "bulk", abort_every=4) for i in range(2)]
    hand = Poster("hand", port, "hand", every=0.05)
    real = Poster("tms", port, "tms", every=0.3, limit=12, env={"FAKE_PILOT_MODE": "quick"})
    tmss = [HandTms(f"hand-tms-{i}", port, LOCATIONS["hand"], ledger) for i in range(2)]
    actors: list[Actor] = [*bulk, hand, real, *tmss]
    try:
        for a in actors:
            a.start()
        for i in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))  # a random moment, under load
            for a in actors:
                a.check()
            srv.kill()
            if i == 2:  # once while it starts (and migrates)
                srv.spawn()
                time.sleep(rng.uniform(0.05, 0.6))
                srv.kill()
            srv.start()
        wait_until_sync(
            lambda: len(real.acked) == real.limit or bool(real.error),
            30,
            0.2,
            what="the real TMS's workflows to be posted",
        )
        wait_until_sync(lambda: len(ledger.offers) > 0, 10, 0.2, what="a claim after the last restart")
    finally:
        for a in actors:
            a.stopping.set()
        for a in actors:
            a.join(30)
    for a in actors:
        a.check()
    info = f"(seed {seed}; server log {srv.log}, TMS log {tmp_path / 'tms.log'})"
    posted = {wid: made for p in (*bulk, hand, real) for wid, made in p.acked.items()}
    aborted = [wid for p in bulk for wid in p.aborted]
    assert len(posted) > 50 and aborted and ledger.submitted, info
    print(
        f"{len(posted)} workflows acknowledged, {sum(p.no_answer for p in (*bulk, hand, real))} POST attempts unanswered, "
        f"{len(aborted)} aborts, {len(ledger.offers)} offers of {len({o.uuid for o in ledger.offers})} "
        f"taskforces, {len(ledger.submitted)} submits, {len(ledger.refused_submits)} refused {info}"
    )

    try:
        # the repair sweeps finish every acknowledged abort; the real TMS carries on to the end
        def tf_phases(wids: list[str]) -> Counter[str]:
            tfs = read_store(srv.data_dir)["taskforces"]
            return Counter(tfs[tf["taskforce_uuid"]]["phase"] for w in wids for tf in posted[w]["taskforces"])

        wait_until_sync(
            lambda: set(tf_phases(aborted)) == {"cancelled"},
            30,
            0.2,
            what="aborted workflows' taskforces to be cancelled",
        )
        real_wids = list(real.acked)
        wait_until_sync(
            lambda: set(tf_phases(real_wids)) == {"condor-complete"},
            60,
            0.2,
            what="the real TMS's taskforces to complete",
        )
        store = read_store(srv.data_dir)
        api = Api(srv.port, token())
        health = api.call("GET", "/v1/health")
        api.close()
        assert health[0] == 200, health
    finally:
        assert srv.stop() == 0, info
        stop_process(tms)

    # every acknowledged create is there, whole; nothing half-made is
    wfs, tds, tfs, mqs = (store[c] for c in ("workflows", "task_directives", "taskforces", "mqprofiles"))
    assert set(posted) <= set(wfs), info
    for made in posted.values():
        assert {t["task_id"] for t in made["task_directives"]} <= set(tds)
        assert {t["taskforce_uuid"] for t in made["taskforces"]} <= set(tfs)
    parts = Counter(
        (coll, d["workflow_id"])
        for coll, docs in (("td", tds), ("tf", tfs), ("mq", mqs))
        for d in docs.values()
    )
    assert {wid for _, wid in parts} <= set(wfs), f"parts of a create without its workflow {info}"
    for wid in wfs:  # 1 task, 1 location, 2 queues each
        assert (parts[("td", wid)], parts[("tf", wid)], parts[("mq", wid)]) == (1, 1, 2), (
            f"{wid} half-made {info}"
        )
    for wid in aborted:
        assert wfs[wid]["deactivated"] == "ABORTED"

    # the hand-driven TMSs: no double offer within a lease, one cluster each, reports kept
    assert offered_twice_within_lease(ledger.offers, LEASE_S) == [], info
    for uuid, cluster in ledger.submitted.items():
        tf = tfs[uuid]
        assert tf["cluster_id"] == cluster, info
        submits = [
            e for e in tf["phase_change_log"] if e["target_phase"] == "condor-submit" and e["was_successful"]
        ]
        assert len(submits) == 1, f"{uuid}: {submits} {info}"
        if uuid in ledger.completed:
            assert tf["phase"] == "condor-complete"
        else:
            assert tf["phase"] == "condor-submit"
        if uuid in ledger.statuses_acked:
            assert (
                ledger.statuses_acked[uuid]
                <= tf["compound_statuses"]["RUNNING"]["Tasking"]
                <= ledger.statuses_sent[uuid]
            )
    assert all(status == 404 for _, status in ledger.second_submits), ledger.second_submits
    for uuid, cluster in ledger.refused_submits:  # only ever because another TMS's submit won
        assert tfs[uuid]["cluster_id"] not in (None, cluster), info

    # the real TMS: one local cluster per taskforce, the one the server knows
    records = []
    for path in glob.glob(os.path.join(jobs, ".local-schedd", "clusters", "*.json")):
        with open(path) as f:
            records.append(json.load(f))
    per_tf = Counter(r["spec"]["taskforce_uuid"] for r in records)
    assert per_tf and max(per_tf.values()) == 1, per_tf
    for r in records:
        assert tfs[r["spec"]["taskforce_uuid"]]["cluster_id"] == r["cluster_id"]
    # every acknowledged create ran; a create the kill cut off before its answer may have been
    # committed all the same (then it runs too: it is whole, as checked above)
    acked = {tf["taskforce_uuid"] for w in real_wids for tf in posted[w]["taskforces"]}
    at_real = {uuid for uuid, tf in tfs.items() if tf["cluster_location"] == "tms"}
    assert acked <= set(per_tf) <= at_real, info
