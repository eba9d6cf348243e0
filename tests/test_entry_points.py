"""The user-facing entry points (`ewms`, `ewms-pilot`, `ewms-tms`) as a user meets them:
`--version`, and help texts that state every default and never print an empty one."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = {"ewms": "ewms_client", "ewms-pilot": "ewms_pilot", "ewms-tms": "tms"}
CLIENT_COMMANDS = ("submit", "push", "pull", "list", "status", "watch", "finish", "abort")
EMPTY_DEFAULTS = ("(default (required))", "(default: )", "(default )", "default: None", "(default None)")


def python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
    )


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return python("-m", module, *args)


@pytest.mark.parametrize("prog", sorted(PROGRAMS))
def test_version(prog: str) -> None:
    out = run(PROGRAMS[prog], "--version")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(rf"{prog} (\d+\.\d+\S*|unknown \(not installed\))\n", out.stdout), out.stdout


@pytest.mark.parametrize(
    "prog, args",
    [("ewms", ()), ("ewms-pilot", ()), ("ewms-tms", ())] + [("ewms", (c,)) for c in CLIENT_COMMANDS],
)
def test_help_never_prints_an_empty_default(prog: str, args: tuple[str, ...]) -> None:
    out = run(PROGRAMS[prog], *args, "--help")
    assert out.returncode == 0, out.stderr
    for bad in EMPTY_DEFAULTS:
        assert bad not in out.stdout, f"{prog} {' '.join(args)} --help: {bad}"


def _options(p: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{name} {a.dest}", a) for _n, a in _options(sub)]
        elif action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            out.append((action.dest, action))
    return out


def test_every_client_option_with_a_default_states_it() -> None:
    from ewms_client.__main__ import parser

    options = _options(parser())
    assert {name for name, _a in options} >= {"log_level", "push wait", "pull timeout", "list limit"}
    for name, action in options:
        assert action.help and "default" in action.help, name


def test_every_pilot_setting_states_its_default_or_that_it_is_required() -> None:
    from ewms_pilot.__main__ import settings_help
    from ewms_pilot.config import SETTINGS_DOCS

    entries: dict[str, str] = {}
    for line in settings_help().splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name = line.strip()
            entries[name] = ""
        elif line.startswith("      ") and entries:
            entries[name] += " " + line.strip()
    assert set(entries) == {name for name, _d, _m in SETTINGS_DOCS}
    for name, entry in entries.items():
        assert re.search(r"\((default: .+|required.*)\)$", entry), (name, entry)


@pytest.mark.parametrize("module", sorted(PROGRAMS.values()))
@pytest.mark.parametrize("level, pika", [("INFO", "WARNING"), ("WARNING", "WARNING"), ("DEBUG", "DEBUG")])
def test_pika_logs_at_warning_unless_the_program_logs_debug(module: str, level: str, pika: str) -> None:
    code = (
        f"import logging; from {module}.__main__ import configure_logging; configure_logging({level!r}); "
        "print(logging.getLevelName(logging.getLogger('pika.adapters').getEffectiveLevel()))"
    )
    out = python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{pika}\n"
