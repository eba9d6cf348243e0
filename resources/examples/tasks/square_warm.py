#!/usr/bin/env python3
"""Example warm EWMS task: the square of each number, as one Python function kept warm.

With `EWMS_PILOT_TASK_MODE=warm` (square-warm.json) the pilot starts this script once per
concurrent task and sends it message after message (docs/warm-runner.md); under the
per-message runner it handles the one message in `$EWMS_TASK_INFILE`. A message that is not a
number fails that task (ValueError), which the pilot counts, reports and returns to the queue.
"""

from ewms_pilot.worker import serve


def square(text: str) -> str:
    text = text.strip()
    value = float(text) if "." in text else int(text)
    return f"{value * value}\n"


if __name__ == "__main__":
    serve(square, input_as="text")
