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
