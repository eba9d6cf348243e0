"""Test warm worker speaking the protocol by hand (no helper), misbehaving on request.

It echoes every message, except: b"garbage" is answered with a line that is not JSON,
b"symlink" with an outfile that is a symlink to `$TEST_SECRET`, and on b"orphan" it exits
leaving a child that holds its end of the socket open. `$TEST_HELLO` replaces the hello line.
`$TEST_PID_DIR` as in warm_task.py.
"""

import base64
import json
import os
import socket
import subprocess

if os.environ.get("TEST_PID_DIR"):
    open(os.path.join(os.environ["TEST_PID_DIR"], str(os.getpid())), "w").close()
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ["EWMS_WARM_SOCKET"])
sock.sendall(os.environ.get("TEST_HELLO", '{"ewms_warm": 1}').encode() + b"\n")
for line in sock.makefile("rb"):
    task = json.loads(line)
    data = base64.b64decode(task["data"]) if "data" in task else open(task["infile"], "rb").read()
    if data == b"garbage":
        sock.sendall(b"this is not json\n")
    elif data == b"orphan":
        subprocess.Popen(["sleep", "60"], pass_fds=[sock.fileno()])
        os._exit(5)
    elif data == b"symlink":
        os.symlink(os.environ["TEST_SECRET"], task["outfile"])
        sock.sendall(json.dumps({"id": task["id"], "ok": True, "outfile": task["outfile"]}).encode() + b"\n")
    else:
        reply = {"id": task["id"], "ok": True, "data": base64.b64encode(data).decode()}
        sock.sendall(json.dumps(reply).encode() + b"\n")
