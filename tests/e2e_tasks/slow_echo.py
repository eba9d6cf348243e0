#!/usr/bin/env python3
"""A task of a fixed duration for the autoscaling tests: sleep argv[1] seconds, then write
the input message back as the result (so each result names its message)."""

import os
import sys
import time


def main() -> int:
    time.sleep(float(sys.argv[1]))
    with open(os.environ["EWMS_TASK_INFILE"], encoding="utf-8") as f:
        text = f.read()
    with open(os.environ["EWMS_TASK_OUTFILE"], "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
