"""A `docker` stand-in for EWMS's published pilot (no docker engine here): runs the task locally.

`docker pull IMAGE` succeeds. `docker run [--rm] [--shm-size=…] [--mount type=bind,source=S,
target=T[,readonly]]… [--env K=V | --env K]… IMAGE ARG…` runs IMAGE (a program on this machine)
with ARG…, with PATH and the --env variables only (as a container gets; a bare K is the
stand-in's own K, as docker does), every bind-mount target in
them replaced by its source. Any other command line exits 125, as docker does.
"""

from __future__ import annotations

import os
import sys


def bad(message: str) -> None:
    print(f"docker stand-in: {message}", file=sys.stderr)
    sys.exit(125)


def main(argv: list[str]) -> None:
    if argv[:1] == ["pull"] and len(argv) == 2:
        return
    if argv[:1] != ["run"]:
        bad(f"unsupported command {argv[:1]}")
    mounts: dict[str, str] = {}
    env: dict[str, str] = {}
    rest = argv[1:]
    while rest and rest[0].startswith("--"):
        opt = rest.pop(0)
        if opt in ("--rm", "--init") or opt.startswith("--shm-size="):
            continue
        if opt in ("--name", "--user", "--workdir") and rest:  # our runner's: no effect here
            rest.pop(0)
            continue
        if opt not in ("--mount", "--env") or not rest:
            bad(f"unsupported option {opt}")
        value = rest.pop(0)
        if opt == "--env":
            name, eq, val = value.partition("=")
            if eq:
                env[name] = val
            elif name in os.environ:  # `--env NAME`: docker passes its own NAME, if set
                env[name] = os.environ[name]
        else:
            fields = dict(f.partition("=")[::2] for f in value.split(","))
            if fields.get("type") != "bind" or not fields.get("source") or not fields.get("target"):
                bad(f"unsupported mount {value}")
            mounts[fields["target"]] = fields["source"]
    if not rest:
        bad("no image")

    def on_host(text: str) -> str:
        for target in sorted(mounts, key=len, reverse=True):
            if text == target or text.startswith(target.rstrip("/") + "/"):
                return mounts[target] + text[len(target) :]
        return text

    image, *args = rest
    child_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | {k: on_host(v) for k, v in env.items()}
    os.execve(image, [image, *map(on_host, args)], child_env)


if __name__ == "__main__":
    main(sys.argv[1:])
