#!/usr/bin/env python3
"""Print the requirements of EWMS components (setup.cfg's extras), one per line.

For installing one component without the others' dependencies (a pilot image without motor
and htcondor); a plain `pip install .` installs every component's:

    pip install --no-deps . && pip install $(python3 resources/component-requirements.py pilot)

Components: server, tms, pilot, client (several: their union). Standard library only, so
that any Python 3 (Debian's, a slim image's) runs it before anything is installed.
"""

from __future__ import annotations

import argparse
import configparser
import sys
from pathlib import Path

COMPONENTS = ("server", "tms", "pilot", "client")


def requirements(setup_cfg: Path, component: str) -> list[str]:
    cfg = configparser.ConfigParser()
    if not cfg.read(setup_cfg):
        raise FileNotFoundError(f"cannot read {setup_cfg}")
    raw = cfg["options.extras_require"][component]
    return [line.strip() for line in raw.splitlines() if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "components", nargs="+", choices=COMPONENTS, metavar="COMPONENT", help=", ".join(COMPONENTS)
    )
    p.add_argument(
        "--setup-cfg",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "setup.cfg",
        help="the project's setup.cfg (default: the one beside resources/)",
    )
    a = p.parse_args()
    try:
        found = [r for c in a.components for r in requirements(a.setup_cfg, c)]
    except (OSError, KeyError) as e:
        sys.exit(f"component-requirements: {e}")
    print("\n".join(dict.fromkeys(found)))


if __name__ == "__main__":
    main()
