"""EWMS's meanings for the inputs it accepts beyond our stored forms, applied once at the edge.

EWMS's clients send some values in forms we do not store: numbers and booleans as
`pilot_config.environment` values, priorities above 100. The schema accepts them; this turns
a validated request into the stored form, with the meaning EWMS gives them, so the rest of the
server (and the TMS) sees one form only:

- an environment value that is not a string becomes `str(value)`, as EWMS's TMS writes it
  into the submit description: 5 -> "5", 1.5 -> "1.5", true -> "True";
- a workflow or worker priority above 100 is stored as 100 (EWMS meant to cap it at 100 and
  applied max() instead of min()); a negative one is a 400 from the schema.

Integer `worker_memory` / `worker_disk` and `image_source: "auto"` are stored as given: the
TMS reads a bare number as HTCondor does (MiB / KiB) and "auto" as the CVMFS image.
"""

from __future__ import annotations

import copy
from typing import Any

MAX_PRIORITY = 100


def env_value(value: Any) -> str:
    """A JSON scalar as EWMS's TMS writes it into the environment (Python's str())."""
    return value if isinstance(value, str) else str(value)


def workflow_request(body: dict[str, Any]) -> dict[str, Any]:
    """A validated POST /v1/workflows body in the stored form (a copy; `body` is untouched)."""
    out = copy.deepcopy(body)
    if "priority" in out:
        out["priority"] = min(out["priority"], MAX_PRIORITY)
    for task in out.get("tasks", []):
        env = (task.get("pilot_config") or {}).get("environment")
        if env:
            task["pilot_config"]["environment"] = {k: env_value(v) for k, v in env.items()}
        wc = task.get("worker_config") or {}
        if "priority" in wc:
            wc["priority"] = min(wc["priority"], MAX_PRIORITY)
    return out
