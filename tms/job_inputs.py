"""What a backend can start: the user inputs of a taskforce, checked and made safe for a job.

The server applies these checks at the API (a 400 naming the field); the TMS applies them
again when it builds a cluster, so a stored taskforce that slipped past ends in a failed
submit with its reason, never in a submit description that says something else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import classad2

MEMORY_SUBMIT_UNIT = 1 << 20  # submitted as whole MiB ("<n>M"), read alike by every HTCondor
DISK_SUBMIT_UNIT = 1 << 10  # submitted as whole KiB ("<n>K")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_BYTES = re.compile(r"^\s*(\d+)\s*B\s*$", re.IGNORECASE)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# a name HTCondor's environment syntax and every shell can carry
_PORTABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ATTR = "ewmsexpr"
_LAYOUT = re.compile(r"[ \t]*\n\s*")
_MACRO = re.compile(r"\$(?:\$|\(|[A-Za-z_][A-Za-z0-9_]*\()")


class BadInput(ValueError):
    """One input no backend can start; the message names its field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def parse_size(value: object, *, field: str) -> int:
    """'512M', '1GiB', '100B' or a bare number of bytes -> bytes. A bare number (a JSON
    integer or a numeric string) is bytes, as EWMS reads it (humanfriendly, binary units):
    the same request means the same size on EWMS and here."""
    text = str(value)
    if m := _BYTES.match(text):
        return int(m.group(1))
    m = _SIZE.match(text)
    if not m:
        raise BadInput(field, f"not a size: {text[:40]!r} (e.g. 512M, 2G)")
    unit = _UNITS[m.group(2).upper()] if m.group(2) else 1
    return math.ceil(float(m.group(1)) * unit)


def check_env_name(name: str, field: str, *, portable: bool) -> None:
    """``portable``: the name travels in HTCondor's environment syntax, so letters, digits, _."""
    if portable:
        if not _PORTABLE_NAME.match(name):
            raise BadInput(field, f"environment name {name[:40]!r} must match [A-Za-z_][A-Za-z0-9_]*")
    elif not name or "=" in name or "\0" in name:
        raise BadInput(field, f"environment name {name[:40]!r} is empty or holds '=' or NUL")


def check_env_value(value: str, field: str, *, one_line: bool) -> None:
    """NUL ends a C string. ``one_line``: the value is written into a submit description."""
    if "\0" in value:
        raise BadInput(field, "holds a NUL character")
    if one_line:
        check_submit_text(value, field)


def check_submit_text(text: str, field: str) -> None:
    """Text HTCondor's submit language takes literally: a line break would start a new
    submit command, and '$(...)', '$NAME(...)' or '$$' would expand as a macro -- e.g.
    '$ENV(EWMS_TMS_TOKEN)' to the TMS's own environment."""
    if "\0" in text:
        raise BadInput(field, "holds a NUL character")
    if "\n" in text or "\r" in text:
        raise BadInput(field, "holds a line break (an HTCondor submit value cannot carry one)")
    if m := _MACRO.search(text):
        raise BadInput(
            field, f"holds {m.group(0)!r}: HTCondor would expand '$(', '$NAME(' and '$$' as a macro"
        )


def check_input_file(url: str, field: str, schemes: Collection[str] | None) -> None:
    """A URL HTCondor fetches on the execute point, never a path read at the access point.
    ``schemes`` None: any scheme but ``file``."""
    if any(c.isspace() or ord(c) < 32 or c in ',\\"' for c in url):
        raise BadInput(field, "holds whitespace, a control character, a comma, a quote or a backslash")
    check_submit_text(url, field)
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if not scheme:
        raise BadInput(field, f"{url[:80]!r} is not a URL; local paths are not transferred")
    if scheme == "file" if schemes is None else scheme not in schemes:
        allowed = "any but file" if schemes is None else ", ".join(sorted(schemes))
        raise BadInput(field, f"URL scheme {scheme!r} is not allowed (allowed: {allowed})")


def _parse_one(text: str) -> classad2.ExprTree | None:
    """``text`` as the one attribute of an ad, or None. (classad2.ExprTree(text) would accept
    trailing text after a ']' and extra attributes after a ';', silently dropped.)"""
    try:
        ad = classad2.ClassAd(f"[{_ATTR} = {text}]")
    except classad2.ClassAdException:
        return None
    if len(ad) != 1 or _ATTR not in ad:
        return None
    return ad.lookup(_ATTR)


def _layout_free(expr: classad2.ExprTree) -> str:
    # the unparser lays nested ads and lists out over lines (line breaks inside strings come
    # out as \n): drop that layout; a re-parse checks the tree is unchanged
    return _LAYOUT.sub("", str(expr))


def _parse_whole(text: str, field: str) -> classad2.ExprTree:
    check_submit_text(text.replace("\n", " ").replace("\r", " "), field)  # layout may span lines
    plain, wrapped = _parse_one(text), _parse_one(f"({text})")
    if plain is None or wrapped is None:
        raise BadInput(field, "is not one whole ClassAd expression")
    canonical = _layout_free(plain).strip()
    # the text must be one expression on its own and inside parentheses alike: text that only
    # parses one way closes a parenthesis or an ad it did not open
    if _parse_one(f"({canonical})") != wrapped or _parse_one(canonical) != plain:
        raise BadInput(field, "is not one whole ClassAd expression")
    return plain


def parse_requirements(text: str, field: str) -> str:
    """A whole ClassAd expression, rendered on one line by the ClassAd unparser."""
    return _layout_free(_parse_whole(text, field)).strip()


def classad_string(text: str) -> str:
    """``text`` as the inside of a ClassAd string literal (backslashes and quotes escaped)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def combine_requirements(site: str, user: str, field: str = "condor_requirements") -> str:
    """``(site) && (user)`` built from the parsed expressions; '' when neither is set."""
    trees = [
        _parse_whole(text, name)
        for text, name in ((site, "site requirements"), (user, field))
        if text and text.strip()
    ]
    if len(trees) < 2:
        return _layout_free(trees[0]).strip() if trees else ""
    a, b = (_layout_free(t) for t in trees)
    combined = f"({a.strip()}) && ({b.strip()})"
    tree = _parse_one(combined)
    # the parse is an && of the two parenthesized trees, nothing else
    if tree is None or _layout_free(tree) != f"({a}) && ({b})":
        raise BadInput(field, "could not be combined with the site requirements")
    return combined


def check_task(
    task: Mapping[str, Any],
    pilot_config: Mapping[str, Any],
    worker_config: Mapping[str, Any],
    *,
    where: str = "",
    schemes: Collection[str] | None = None,
) -> None:
    """Every rule above, over one task's fields (a request's task, or a stored directive).

    ``schemes``: allowed input-file URL schemes; None allows any but ``file``.
    """
    for name in ("task_image", "task_args", "init_image", "init_args"):  # -> the job's environment
        check_env_value(str(task.get(name) or ""), f"{where}{name}", one_line=True)
    for name in ("task_env", "init_env"):  # -> JSON (line breaks escaped) in the job's environment
        for key, value in (task.get(name) or {}).items():
            check_env_name(str(key), f"{where}{name}", portable=False)
            check_submit_text(str(key).replace("\n", " "), f"{where}{name}")
            check_env_value(str(value), f"{where}{name}.{key}", one_line=False)
            check_submit_text(str(value).replace("\n", " ").replace("\r", " "), f"{where}{name}.{key}")
    for key, value in (pilot_config.get("environment") or {}).items():
        check_env_name(str(key), f"{where}pilot_config.environment", portable=True)
        check_env_value(str(value), f"{where}pilot_config.environment.{key}", one_line=True)
    for i, url in enumerate(pilot_config.get("input_files") or []):
        check_input_file(str(url), f"{where}pilot_config.input_files[{i}]", schemes)
    if (text := worker_config.get("condor_requirements")) and str(text).strip():
        parse_requirements(str(text), f"{where}worker_config.condor_requirements")
    for name in ("worker_memory", "worker_disk"):
        if name in worker_config:
            parse_size(worker_config[name], field=f"{where}worker_config.{name}")
