"""MongoDB's inclusion projection, for drivers that return whole documents (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ProjectionCollision(ValueError):
    """One projected path is a prefix of another (MongoDB refuses these too)."""


def projection_tree(paths: Sequence[str]) -> dict[str, Any]:
    """{"a": True, "b": {"c": True}} for ["a", "b.c"]."""
    if isinstance(paths, str):
        raise TypeError("a projection is a list of field paths, not a string")
    tree: dict[str, Any] = {}
    for path in paths:
        parts = path.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if node is True:
                raise ProjectionCollision(f"projection path {path!r} collides with a shorter path")
        if node.get(parts[-1], True) is not True:
            raise ProjectionCollision(f"projection path {path!r} collides with a longer path")
        node[parts[-1]] = True
    return tree


def project(value: Any, tree: dict[str, Any]) -> Any:
    """Keep the fields of `tree`; through arrays only their (projected) documents remain."""
    if isinstance(value, list):
        return [project(v, tree) for v in value if isinstance(v, (dict, list))]
    out = {}
    for key, sub in value.items():
        spec = tree.get(key)
        if spec is True:
            out[key] = sub
        elif spec is not None and isinstance(sub, (dict, list)):
            out[key] = project(sub, spec)
    return out
