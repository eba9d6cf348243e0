#!/usr/bin/env python3
"""Example EWMS task: read a number from $EWMS_TASK_INFILE, write it plus one to $EWMS_TASK_OUTFILE.

Exits 3 (a task failure) when the input is not a number.
"""

import os
import sys


def main() -> int:
    with open(os.environ["EWMS_TASK_INFILE"], encoding="utf-8") as f:
        text = f.read().strip()
    try:
        value = float(text) if "." in text else int(text)
    except ValueError:
        print(f"not a number: {text[:80]!r}", file=sys.stderr)
        return 3
    with open(os.environ["EWMS_TASK_OUTFILE"], "w", encoding="utf-8") as f:
        f.write(f"{value + 1}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
