"""Per-component extras (setup.cfg): each package imports only what its extra provides, so a
pilot image built from the `pilot` extra alone (dockerfiles/pilot.Dockerfile) runs, and a
plain `pip install .` (install_requires) still installs every component's dependencies."""

from __future__ import annotations

import importlib.metadata
import os
import runpy
import site
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
SETUP_CFG = REPO / "setup.cfg"
requirements = runpy.run_path(str(REPO / "resources" / "component-requirements.py"))["requirements"]

# component: (its packages, the other project packages it may import)
COMPONENTS = {
    "server": (("ewms_server",), ("tms",)),  # tms.job_inputs checks job inputs at the API
    "tms": (("tms",), ()),
    "pilot": (("ewms_pilot",), ()),
    "client": (("ewms_client",), ("ewms_pilot",)),  # its envelope and broker address
}

# Imports every module of the given packages with every top-level module outside the allowed
# set refused (a meta-path hook); prints each module that needed more, exits 1 if any did.
PROBE = """
import importlib, importlib.abc, pkgutil, sys, traceback
packages, allowed = sys.argv[1].split(","), set(sys.argv[2].split(","))
allowed |= set(sys.stdlib_module_names) | set(sys.builtin_module_names)
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in allowed:
            raise ImportError(f"{top} is not in this component's extra")
sys.meta_path.insert(0, Refuse())
failed = 0
for pkg in packages:
    root = importlib.import_module(pkg)
    assert root.__file__.startswith(sys.argv[3]), root.__file__
    for info in pkgutil.walk_packages(root.__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as e:
            failed += 1
            print(f"{info.name}: {e}")
sys.exit(1 if failed else 0)
"""


def closure(reqs: list[str]) -> set[str]:
    """The installed distributions these requirements bring, with theirs (extras followed)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in reqs]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for dep in importlib.metadata.requires(name) or []:
            r = Requirement(dep)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(r)
    return {k.split("[")[0] for k in seen}


def modules_of(dists: set[str]) -> set[str]:
    return {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if any(canonicalize_name(d) in dists for d in owners)
    }


def probe(packages: tuple[str, ...], allowed: set[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EWMS_")}
    # -S: no .pth file runs (they may import packages before the hook is in place)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *site.getsitepackages()])
    return subprocess.run(
        [sys.executable, "-S", "-c", PROBE, ",".join(packages), ",".join(sorted(allowed)), str(REPO)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def install_requires() -> list[str]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    return [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]


def test_a_plain_install_brings_every_component() -> None:
    union = {r for c in COMPONENTS for r in requirements(SETUP_CFG, c)}
    assert set(install_requires()) == union


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_each_package_imports_only_what_its_extra_provides(component: str) -> None:
    packages, also = COMPONENTS[component]
    allowed = modules_of(closure(requirements(SETUP_CFG, component))) | set(packages) | set(also)
    out = probe(packages, allowed)
    assert out.returncode == 0, f"{component}: imports outside its extra:\n{out.stdout}{out.stderr}"


def test_the_probe_sees_an_import_outside_the_extra() -> None:
    """The pilot without zstd (as if its extra lacked it): its envelope module cannot load."""
    allowed = modules_of(closure(["pika>=1.3"])) | {"ewms_pilot"}
    out = probe(("ewms_pilot",), allowed)
    assert out.returncode == 1
    assert "ewms_pilot.envelope: zstd is not in this component's extra" in out.stdout


def test_the_probe_sees_a_project_package_the_component_may_not_use() -> None:
    allowed = modules_of(closure(requirements(SETUP_CFG, "client"))) | {"ewms_client"}
    out = probe(("ewms_client",), allowed)
    assert out.returncode == 1
    assert "ewms_client.client: ewms_pilot is not in this component's extra" in out.stdout
