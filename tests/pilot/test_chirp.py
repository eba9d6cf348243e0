"""Chirp lines: format, escaping, HTCondor's length limit, rate limiting."""

from __future__ import annotations

import re

from ewms_pilot.chirp import MAX_LINE, Chirper, FileSink, PilotStatus, chirp_line

LINE = re.compile(r'^HTChirpEWMSPilot(\w+): "((?:[^"\\]|\\.)*)"$')


def test_values_are_always_quoted() -> None:
    assert chirp_line("TasksTotal", 5) == 'HTChirpEWMSPilotTasksTotal: "5"'
    assert chirp_line("Status", PilotStatus.TASKING.value) == 'HTChirpEWMSPilotStatus: "Tasking"'


def test_quotes_newlines_and_backslashes_are_escaped_on_one_line() -> None:
    line = chirp_line("ErrorTraceback", 'Traceback:\n  raise X("a\\b")\n')
    assert "\n" not in line
    m = LINE.match(line)
    assert m and m.group(2) == 'Traceback:\\n  raise X(\\"a\\\\b\\")\\n'


def test_long_values_are_cut_to_a_well_formed_line() -> None:
    for value in ("x" * 5000, "\\" * 5000, '"' * 3000, "é" * 2000):
        line = chirp_line("Error", value)
        assert len(line) <= MAX_LINE and LINE.match(line), value[:3]


class ListSink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def send(self, line: str) -> None:
        self.lines.append(line)


async def test_changes_are_rate_limited_and_flush_always_sends() -> None:
    now = [100.0]
    sink = ListSink()
    c = Chirper(sink, interval=10, clock=lambda: now[0])
    c.status(PilotStatus.STARTED)
    await c.flush()
    assert sink.lines[0] == 'HTChirpEWMSPilotStatus: "Started"'
    c.counts(1, 1, 0)
    now[0] += 5
    await c.maybe_flush()
    assert not any("TasksTotal" in line for line in sink.lines)  # within the interval
    now[0] += 5
    await c.maybe_flush()
    assert 'HTChirpEWMSPilotTasksTotal: "1"' in sink.lines
    n = len(sink.lines)
    await c.maybe_flush()
    assert len(sink.lines) == n  # nothing changed, nothing sent
    c.status(PilotStatus.DONE)
    await c.flush()  # the final status ignores the rate limit
    assert sink.lines[-2] == 'HTChirpEWMSPilotStatus: "Done"'
    assert sink.lines[-1].startswith("HTChirpEWMSPilotLastUpdatedTimestamp: ")


async def test_status_is_sent_after_the_counts_it_summarizes() -> None:
    sink = ListSink()
    c = Chirper(sink, interval=0)
    c.status(PilotStatus.DONE)
    c.counts(3, 2, 1)
    await c.flush()
    attrs = [LINE.match(line).group(1) for line in sink.lines]  # type: ignore[union-attr]
    assert attrs.index("Status") > attrs.index("TasksFailed")


async def test_file_sink_appends_one_line_per_chirp(tmp_path) -> None:  # type: ignore
    path = tmp_path / "chirp"
    path.write_text("existing\n")
    sink = FileSink(str(path))
    await sink.send(chirp_line("Status", "Started"))
    await sink.send(chirp_line("Status", "Done"))
    sink.close()
    assert path.read_text().splitlines() == [
        "existing",
        'HTChirpEWMSPilotStatus: "Started"',
        'HTChirpEWMSPilotStatus: "Done"',
    ]
