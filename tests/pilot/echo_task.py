"""Test task: echo the input to the output, after `$TEST_SLEEP` seconds.

With `$TEST_PID_DIR` set it first leaves a file named after its pid there (to see it started
and to clean it up); `$TEST_EXIT` makes it fail with that exit code.
"""

import os
import sys
import time

if os.environ.get("TEST_PID_DIR"):
    open(os.path.join(os.environ["TEST_PID_DIR"], str(os.getpid())), "w").close()
time.sleep(float(os.environ.get("TEST_SLEEP", "0")))
if os.environ.get("TEST_EXIT"):
    print("failing on purpose", file=sys.stderr)
    sys.exit(int(os.environ["TEST_EXIT"]))
with open(os.environ["EWMS_TASK_INFILE"], "rb") as fin:
    data = fin.read()
with open(os.environ["EWMS_TASK_OUTFILE"], "wb") as fout:
    fout.write(data)
