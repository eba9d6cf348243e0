#!/usr/bin/env python3
"""Example EWMS task using a secret: for each message, write a JSON line with the message, the
SHA-256 of the secret named on the command line (given by the pilot as $EWMS_SECRET_<NAME>),
and whether the task can see where the pilot keeps its queue credentials (it should not).

The secret itself is never written anywhere: only its digest, which lets a test compare.
Exits 3 when the secret is missing.
"""

import hashlib
import json
import os
import sys


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "X"
    value = os.environ.get(f"EWMS_SECRET_{name}")
    if value is None:
        print(f"no EWMS_SECRET_{name} in the environment", file=sys.stderr)
        return 3
    with open(os.environ["EWMS_TASK_INFILE"], encoding="utf-8") as f:
        text = f.read().strip()
    result = {
        "input": text,
        "sha256": hashlib.sha256(value.encode("utf-8")).hexdigest(),
        "sees_auth_file": "EWMS_PILOT_QUEUE_AUTH_FILE" in os.environ,
        "secret_vars": sorted(k for k in os.environ if k.startswith("EWMS_SECRET_")),
    }
    with open(os.environ["EWMS_TASK_OUTFILE"], "w", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
