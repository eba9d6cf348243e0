"""Test warm task (`ewms_pilot.worker.serve`): echo each message followed by b" by <pid>".

`$TEST_PID_DIR`: each worker leaves a file named after its pid there when it starts (to count
workers, and to clean up orphans). While the file `$TEST_HOLD` exists, a message waits, after
leaving `busy-<pid>` in `$TEST_BUSY_DIR`. The message b"fail" raises; b"crash" ends the worker.
Every message is also printed to stdout and stderr: prints must not disturb the protocol.
"""

import os
import sys
import time

from ewms_pilot.worker import serve

PID = os.getpid()
if os.environ.get("TEST_PID_DIR"):
    open(os.path.join(os.environ["TEST_PID_DIR"], str(PID)), "w").close()


def handle(data: bytes) -> bytes:
    print(f"stdout: got {data[:20]!r}", flush=True)
    print(f"stderr: got {data[:20]!r}", file=sys.stderr, flush=True)
    hold = os.environ.get("TEST_HOLD")
    if hold and os.path.exists(hold):
        open(os.path.join(os.environ["TEST_BUSY_DIR"], f"busy-{PID}"), "w").close()
        while os.path.exists(hold):
            time.sleep(0.02)
    if data == b"fail":
        raise ValueError("failing on purpose")
    if data == b"crash":
        print("crashing on purpose", file=sys.stderr, flush=True)
        os._exit(7)
    return data + b" by %d" % PID


if __name__ == "__main__":
    serve(handle)
