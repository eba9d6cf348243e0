"""Rules about a workflow request that the schema cannot say (pure functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tms import job_inputs

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
        scale = task.get("autoscale")
        if scale is not None and scale.get("min_workers", 0) > scale["max_workers"]:
            raise Invalid(
                f"{where}.autoscale: min_workers ({scale['min_workers']}) is more than "
                f"max_workers ({scale['max_workers']})"
            )
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


@dataclass(frozen=True)
class JobLimits:
    """What a task's jobs may ask for (server settings; see ``ewms-server --help``)."""

    input_file_schemes: frozenset[str] = frozenset({"https", "http", "osdf", "pelican"})
    max_memory_bytes: int = 1 << 40
    max_disk_bytes: int = 20 << 40
    max_cores: int = 256

    @classmethod
    def from_settings(cls, get: Callable[[str], str | None]) -> JobLimits:
        """Raises ValueError naming the setting."""
        schemes = frozenset(
            s.strip().lower() for s in (get("EWMS_INPUT_FILE_SCHEMES") or "").split(",") if s.strip()
        )
        if "file" in schemes:
            raise ValueError("EWMS_INPUT_FILE_SCHEMES: 'file' would let jobs read the access point's files")
        sizes = {}
        for name in ("EWMS_MAX_WORKER_MEMORY", "EWMS_MAX_WORKER_DISK"):
            try:
                sizes[name] = job_inputs.parse_size(get(name), field=name)
            except job_inputs.BadInput as e:
                raise ValueError(str(e)) from None
        try:
            cores = int(get("EWMS_MAX_WORKER_CORES") or "")
        except ValueError:
            raise ValueError(
                f"EWMS_MAX_WORKER_CORES: expected an integer, got {get('EWMS_MAX_WORKER_CORES')!r}"
            ) from None
        if cores < 1:
            raise ValueError("EWMS_MAX_WORKER_CORES: must be >= 1")
        return cls(schemes, sizes["EWMS_MAX_WORKER_MEMORY"], sizes["EWMS_MAX_WORKER_DISK"], cores)


def _bytes(n: int) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def check_job_inputs(body: dict[str, Any], limits: JobLimits) -> None:
    """Refuse what no backend can start, naming the field: text HTCondor would not take
    literally, environment names no process can carry, input files that are not URLs of an
    allowed scheme, requirements that are not one ClassAd expression, sizes no machine has."""
    for i, task in enumerate(body.get("tasks", [])):
        where = f"body.tasks[{i}]."
        wc = task.get("worker_config") or {}
        try:
            job_inputs.check_task(
                task, task.get("pilot_config") or {}, wc, where=where, schemes=limits.input_file_schemes
            )
            for name, low, high in (
                ("worker_memory", job_inputs.MEMORY_SUBMIT_UNIT, limits.max_memory_bytes),
                ("worker_disk", job_inputs.DISK_SUBMIT_UNIT, limits.max_disk_bytes),
            ):
                field = f"{where}worker_config.{name}"
                if name in wc and not low <= job_inputs.parse_size(wc[name], field=field) <= high:
                    raise job_inputs.BadInput(field, f"must be between {_bytes(low)} and {_bytes(high)}")
        except job_inputs.BadInput as e:
            raise Invalid(str(e)) from None
        if int(wc.get("n_cores", 1)) > limits.max_cores:
            raise Invalid(f"{where}worker_config.n_cores: at most {limits.max_cores} (EWMS_MAX_WORKER_CORES)")
