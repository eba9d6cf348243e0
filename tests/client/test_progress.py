"""The watch summary: pilot statuses summed over job statuses, and the progress bar."""

from ewms_client.progress import bar, is_over, pilot_statuses, summary

TFS = [
    {
        "phase": "condor-submit",
        "n_workers": 4,
        "compound_statuses": {
            "RUNNING": {"Tasking": 2},
            "COMPLETED": {"Done": 1},
            "HELD: out of memory": {"Tasking": 1},
        },
        "top_task_errors": {"task exit code 3": 5},
    },
    {
        "phase": "condor-complete",
        "n_workers": 4,
        "compound_statuses": {"COMPLETED": {"Done": 3, "FatalError": 1}},
    },
]


def test_pilot_statuses_sum_over_job_statuses() -> None:
    assert pilot_statuses(TFS) == {"Tasking": 2, "Done": 4, "FatalError": 1, "HELD": 1}


def test_summary_shows_the_finished_fraction_and_top_errors() -> None:
    text = summary({"workflow_id": "WF-1"}, TFS)
    assert "(5/8)" in text and bar(5 / 8) in text
    assert "error x5: task exit code 3" in text


def test_bar_and_end_of_watch() -> None:
    assert bar(0) == "[" + "-" * 30 + "]   0.0%" and bar(2).endswith("100.0%")
    assert not is_over({}, TFS)
    assert is_over({}, [TFS[1]])
    assert is_over({"deactivated": "ABORTED"}, [{"phase": "pre-launch"}, TFS[1]])


# -- task progress (ewms watch / status) ------------------------------------------------------

from ewms_client.progress import diagnosis_lines, duration, progress_lines, task_bar  # noqa: E402

PROGRESS = {
    "workflow_id": "WF-1",
    "deactivated": None,
    "queues": {},
    "tasks": {
        "TK-1": {"succeeded": 20, "failed": 6, "workers": {"Tasking": 2}, "top_errors": {"exit 3": 2}},
        "TK-2": {"succeeded": 5, "failed": 0, "workers": {"Done": 1}, "top_errors": {}},
    },
    "totals": {"succeeded": 25, "failed": 6, "pending": 10, "in_flight": 2, "dead_lettered": 3},
    "rate_per_s": 2.0,
    "eta_s": 6.0,
    "history": [],
    "broker_ts": 1.0,
    "computed_ts": 1.0,
}


def test_task_bar_shows_done_dead_and_waiting_in_proportion() -> None:
    assert task_bar(10, 0, 10, width=10) == "[#####-----]"
    assert task_bar(8, 1, 1, width=10) == "[########x-]"
    assert task_bar(1000, 1, 0, width=10) == "[#########x]"  # a dead letter is never invisible
    assert task_bar(0, 0, 0, width=4) == "[    ]"
    assert duration(5) == "5s" and duration(125) == "2m05s" and duration(7300) == "2h01m"


def test_progress_lines_say_done_dead_pending_rate_and_eta() -> None:
    text = "\n".join(progress_lines(PROGRESS))
    assert "25 done, 3 dead-lettered, 10 pending, 2 in flight (6 failed attempt(s))" in text
    assert "2.00 tasks/s, ETA 6s" in text
    assert "pilots: 1 Done, 2 Tasking" in text
    assert "TK-1: 20 done, 6 failed attempt(s)" in text and "error x2: exit 3" in text
    assert "`ewms retry WF-1`" in text


def test_progress_lines_without_broker_figures() -> None:
    blind = dict(PROGRESS, rate_per_s=None, eta_s=None, broker_error="no broker is configured")
    blind["totals"] = dict(PROGRESS["totals"], pending=None, in_flight=None, dead_lettered=None)  # type: ignore[arg-type]
    text = "\n".join(progress_lines(blind))
    assert "? dead-lettered, ? pending, ? in flight" in text
    assert "rate unknown yet" in text and "queue figures unavailable: no broker is configured" in text
    assert "ewms retry" not in text


def test_diagnosis_lines_explain_idle_and_held_jobs() -> None:
    tf = {
        "diagnosis": {
            "ts": 1.0,
            "backend": "htcondor",
            "jobs": {"idle": 3, "running": 1, "held": 1, "ended": 0},
            "idle_reasons": {"no matching slot": 2, "not yet matched": 1},
            "held": [
                {
                    "proc": 4,
                    "reason": "memory exceeded",
                    "code": 34,
                    "subcode": 0,
                    "since": 0.0,
                    "n_released": 2,
                    "next_action": "remove",
                    "next_action_ts": 60.0,
                }
            ],
            "n_evictions": 2,
            "matches": {"ever_matched": 0, "never_matched": 3},
            "slots": None,
            "error": None,
        }
    }
    lines = diagnosis_lines(tf)
    assert lines[0] == "jobs: 1 running, 3 idle, 1 held; 2 eviction(s)"
    assert "  idle: 2 no matching slot, 1 not yet matched" in lines
    assert any(
        line.startswith("  held job 4: memory exceeded (code 34); to be removed (released too often) at ")
        for line in lines
    )
    assert diagnosis_lines({}) == []


def test_a_server_without_progress_gets_the_pilot_summary() -> None:
    """EWMS's own server has no progress route: watch falls back to the pilots' statuses."""
    from typing import Any

    from ewms_client.client import ClientError, EWMSClient
    from ewms_client.progress import screen

    class OlderServer(EWMSClient):  # the HTTP boundary: answers as EWMS's server would
        def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
            if path.endswith("/progress"):
                raise ClientError("404 from the EWMS server: Not Found")
            if path.startswith("/v1/query/taskforces"):
                return {"taskforces": TFS, "next_after": None}
            return {"workflow_id": "WF-1", "deactivated": None}

    text, over = screen(OlderServer("http://ewms.test", "token"), "WF-1")
    assert "pilots finished [" in text and "(5/8)" in text and not over
