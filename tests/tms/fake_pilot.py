"""A stand-in pilot for local-backend tests: chirps like ewms_pilot, per docs/contracts.md.

Behaviour from FAKE_PILOT_MODE: "quick" (chirp and exit 0), "sleep" (chirp, then run until killed),
"env" (print what it is -- environment, ids, directory, what it can read -- as one JSON line on
stdout, then as quick).
"""

import json
import os
import sys
import time


def chirp(attr: str, value: object) -> None:
    path = os.environ.get("EWMS_PILOT_CHIRP_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f'HTChirpEWMSPilot{attr}: "{value}"\n')


mode = os.environ.get("FAKE_PILOT_MODE", "quick")
chirp("StartedTimestamp", time.time())
chirp("Status", "Started")
if mode == "env":
    with open(os.environ["EWMS_PILOT_QUEUE_AUTH_FILE"]) as f:
        auth = json.load(f)  # readable by the job
    cwd = os.getcwd()
    st = os.stat(cwd)
    print(
        "ENV-DUMP "
        + json.dumps(
            {
                "environ": dict(os.environ),
                "uid": os.getuid(),
                "euid": os.geteuid(),
                "gid": os.getgid(),
                "groups": os.getgroups(),
                "cwd": cwd,
                "cwd_owner": st.st_uid,
                "cwd_mode": st.st_mode & 0o7777,
                "auth_mqids": sorted(auth),
            }
        ),
        flush=True,
    )
chirp("Status", "Tasking")
chirp("TasksTotal", 1)
print("pilot output line")
if mode == "sleep":
    while True:
        time.sleep(0.2)
chirp("Status", "Done")
sys.exit(0)
