"""Rules about a workflow request that the schema cannot say (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import Invalid


def _dupes(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({v for v in values if v in seen or seen.add(v)})  # type: ignore[func-returns-value]


def check_location(location: str, known: Mapping[str, Any], where: str) -> None:
    if location not in known:
        raise Invalid(f"{where}: unknown cluster location {location!r} (known: {', '.join(sorted(known))})")


def check_workflow_request(body: dict[str, Any], locations: Mapping[str, Any]) -> list[str]:
    """Raise Invalid on the first broken rule; return every queue alias, in first-use order."""
    aliases: dict[str, None] = {}
    for i, task in enumerate(body["tasks"]):
        where = f"body.tasks[{i}]"
        for j, loc in enumerate(task["cluster_locations"]):
            check_location(loc, locations, f"{where}.cluster_locations[{j}]")
        if d := _dupes(task["cluster_locations"]):
            raise Invalid(f"{where}.cluster_locations: duplicated location(s): {', '.join(d)}")
        ins = task.get("input_queue_aliases", [])
        outs = task.get("output_queue_aliases", [])
        for name, values in (("input_queue_aliases", ins), ("output_queue_aliases", outs)):
            if d := _dupes(values):
                raise Invalid(f"{where}.{name}: duplicated alias(es): {', '.join(d)}")
        if both := sorted(set(ins) & set(outs)):
            raise Invalid(
                f"{where}: alias(es) {', '.join(both)} are both input and output of the same "
                "task (it would consume its own results)"
            )
        for a in (*ins, *outs):
            aliases[a] = None
    public = body.get("public_queue_aliases", [])
    if d := _dupes(public):
        raise Invalid(f"body.public_queue_aliases: duplicated alias(es): {', '.join(d)}")
    if unused := [a for a in public if a not in aliases]:
        raise Invalid(
            f"body.public_queue_aliases: alias(es) {', '.join(unused)} are not an input or output of any task"
        )
    return list(aliases)


def with_defaults(given: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    out.update(given or {})
    return out
