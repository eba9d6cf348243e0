"""The OpenAPI document, and validators compiled from it once at start.

Requests are checked against their route's parameters and body schema; database writes
are checked field by field against the collection's component schema (only the fields a
write touches, not the whole document on every write).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
from jsonschema import Draft202012Validator

from .errors import Invalid
from .storage.base import Change
from .storage.collections import COLLECTIONS

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in a request body (the API needs far less)."""


def load_openapi_text() -> str:
    """From the installed package data, or from the checkout's `schema/` when run in place."""
    try:
        return (importlib.resources.files("ewms_server.openapi") / "openapi.json").read_text()
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parent.parent / "schema" / "openapi.json").read_text()


def _resolve(ref: str, components: dict[str, Any]) -> Any:
    """`#/components/schemas/X[/properties/y…]` (a JSON pointer into the components)."""
    node: Any = components
    for part in ref.removeprefix("#/components/schemas/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _inline_refs(node: Any, components: dict[str, Any]) -> Any:
    """Replace `#/components/schemas/…` refs by copies (our schemas are not recursive)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return _inline_refs(copy.deepcopy(_resolve(ref, components)), components)
        return {k: _inline_refs(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, components) for v in node]
    return node


def too_deep(value: Any, limit: int) -> bool:
    """Is `value` nested deeper than `limit` levels? Iterative: any depth is safe to ask about."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


STORED = "x-ewms-stored"
"""A component's fields stored with each document but never shown (the server's bookkeeping)."""


def stored_schema(component: dict[str, Any]) -> dict[str, Any]:
    """The schema of a stored document: the component's fields plus its `x-ewms-stored` ones."""
    extra = component.get(STORED)
    out = {k: v for k, v in component.items() if k != STORED}
    if extra:
        out["properties"] = {**component.get("properties", {}), **extra.get("properties", {})}
        out["required"] = [*component.get("required", []), *extra.get("required", [])]
    return out


def _path_of(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error: jsonschema.ValidationError, where: str) -> str:
    """A message that names the bad field, e.g. `body.tasks[0].n_workers: 'x' is not …`."""
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        field = _path_of(error)
        names = ", ".join(f"{where}{'.' + field if field else ''}.{e}" for e in extra)
        return f"unknown field(s): {names}"
    if error.validator == "required":
        field = _path_of(error)
        return f"{where}{'.' + field if field else ''}: {error.message}"
    field = _path_of(error)
    message = error.message
    if len(message) > 300:
        message = message[:300] + "…"
    return f"{where}{'.' + field if field else ''}: {message}"


class Checker:
    """One compiled schema: a fast Rust validator decides; python-jsonschema only words the
    message when something is wrong (about 100x faster on the valid path, which is the hot one)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self._fast = jsonschema_rs.validator_for(schema)
        self._slow = Draft202012Validator(schema)

    def problems(self, instance: Any, where: str, most: int = 5) -> str | None:
        """None when valid; else every problem (up to `most`) with its field path."""
        if self._fast.is_valid(instance):
            return None
        try:
            errors = sorted(self._slow.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
        except RecursionError:  # python-jsonschema recurses; the Rust validator does not
            errors = []
        if not errors:  # the two disagree: trust the stricter one, word it as it does
            message = next(iter(self._fast.iter_errors(instance))).message
            return f"{where}: {message[:300] + '…' if len(message) > 300 else message}"
        messages = list(dict.fromkeys(describe(jsonschema.exceptions.best_match([e]), where) for e in errors))
        more = f" (and {len(messages) - most} more)" if len(messages) > most else ""
        return "; ".join(messages[:most]) + more


class OpenAPI:
    """The parsed document plus compiled validators."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text if text is not None else load_openapi_text()
        self.doc: dict[str, Any] = json.loads(self.text)
        components = self.doc["components"]["schemas"]
        self.schemas: dict[str, Any] = {name: _inline_refs(s, components) for name, s in components.items()}
        self._bodies: dict[tuple[str, str], Checker | None] = {}
        self._body_required: dict[tuple[str, str], bool] = {}
        self._params: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for path, ops in self.doc["paths"].items():
            for method, op in ops.items():
                key = (path, method.upper())
                self._params[key] = op.get("parameters", [])
                rb = op.get("requestBody")
                if rb and "application/json" in rb["content"]:
                    schema = _inline_refs(rb["content"]["application/json"]["schema"], components)
                    self._bodies[key] = Checker(schema)
                    self._body_required[key] = bool(rb.get("required"))
                else:
                    self._bodies[key] = None
        self.stored: dict[str, Any] = {name: stored_schema(s) for name, s in self.schemas.items()}
        """Components as stored: what database writes are checked against."""
        self._components = {name: Checker(s) for name, s in self.stored.items()}

    # -- requests ------------------------------------------------------------------------

    def operations(self) -> Iterable[tuple[str, str]]:
        return self._params.keys()

    def has_body(self, path: str, method: str) -> bool:
        return self._bodies.get((path, method)) is not None

    def body_required(self, path: str, method: str) -> bool:
        return self._body_required.get((path, method), False)

    def check_body(self, path: str, method: str, body: Any) -> None:
        validator = self._bodies[(path, method)]
        if validator is None:
            return
        if too_deep(body, MAX_DEPTH):
            raise Invalid(f"body: nested deeper than {MAX_DEPTH} levels")
        message = validator.problems(body, "body")
        if message is not None:
            raise Invalid(message)

    def check_params(
        self, path: str, method: str, path_args: dict[str, str], query: dict[str, list[bytes]]
    ) -> dict[str, str]:
        """Validate path and query parameters; return the query parameters as strings."""
        out: dict[str, str] = {}
        for p in self._params[(path, method)]:
            name, where, schema = p["name"], p["in"], p["schema"]
            if where == "path":
                value: str | None = path_args.get(name)
            else:
                values = query.get(name)
                if values is not None and len(values) > 1:
                    raise Invalid(f"query.{name}: given more than once")
                try:
                    value = values[0].decode() if values else None
                except UnicodeDecodeError:
                    raise Invalid(f"query.{name}: not valid UTF-8") from None
            if value is None:
                if p.get("required"):
                    raise Invalid(f"{where}.{name}: required parameter is missing")
                continue
            if len(value) > schema.get("maxLength", 1 << 30) or len(value) < schema.get("minLength", 0):
                raise Invalid(
                    f"{where}.{name}: length must be between {schema.get('minLength', 0)} "
                    f"and {schema.get('maxLength')}"
                )
            if where == "query":
                out[name] = value
        return out  # unknown parameters are ignored, as EWMS does

    # -- database writes -----------------------------------------------------------------

    def check_document(self, collection: str, doc: Mapping[str, Any]) -> None:
        name = COLLECTIONS[collection].component
        message = self._components[name].problems(doc, name)
        if message is not None:
            raise ValueError(f"refusing to write an invalid {name}: {message}")

    def check_change(self, collection: str, change: Change) -> None:
        """Check each value a change sets, and each item it appends, against its field's schema."""
        component = COLLECTIONS[collection].component
        for path, value in change.set.items():
            self._check_field(component, path, value, item=False)
        for path, items in change.push.items():
            for item in items:
                self._check_field(component, path, item, item=True)

    def _check_field(self, component: str, path: str, value: Any, item: bool) -> None:
        message = self._field_validator(component, path, item).problems(value, f"{component}.{path}")
        if message is not None:
            raise ValueError(f"refusing to write {message}")

    @lru_cache(maxsize=512)  # noqa: B019 - one OpenAPI per process, kept for its lifetime
    def _field_validator(self, component: str, path: str, item: bool) -> Checker:
        schema: Any = self.stored[component]
        for part in path.split("."):
            props = schema.get("properties", {})
            if part in props:
                schema = props[part]
            elif isinstance(schema.get("additionalProperties"), dict):
                schema = schema["additionalProperties"]
            else:
                raise ValueError(f"{component} has no field {path!r}")
        if item:
            schema = schema["items"]
        return Checker(schema)
