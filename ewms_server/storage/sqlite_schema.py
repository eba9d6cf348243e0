"""The SQLite layout: one table per collection, its version in `PRAGMA user_version`, and
migrations.

Each row holds the document as JSON (`doc`) and, in `ix`, a JSON object of just its indexed
fields (those of the collection table); the indexed columns are generated from `ix`. A write
that changes no indexed field (statuses, log entries) rewrites `doc` alone and leaves every
index untouched: with the columns generated from `doc`, SQLite rewrites all six taskforce
indexes on each update, which costs five times the update itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from .base import SCHEMA_VERSION, StoreTooNew
from .collections import COLLECTIONS, CollectionSpec


def table_ddl(spec: CollectionSpec) -> list[str]:
    cols = ",\n  ".join(
        f'"{c}" GENERATED ALWAYS AS (json_extract(ix, \'$."{c}"\')) VIRTUAL' for c in spec.columns()
    )
    out = [
        f'CREATE TABLE IF NOT EXISTS "{spec.name}" (\n  seq INTEGER PRIMARY KEY,\n  doc TEXT NOT NULL,\n'
        f"  ix TEXT NOT NULL,\n  {cols}\n)"
    ]
    for ix in spec.indexes:
        name = f"{spec.name}__{'__'.join(f.lstrip('-') for f in ix.fields)}"
        terms = ", ".join(f'"{f.lstrip("-")}"{" DESC" if f.startswith("-") else ""}' for f in ix.fields)
        unique = "UNIQUE " if ix.unique else ""
        out.append(f'CREATE {unique}INDEX IF NOT EXISTS "{name}" ON "{spec.name}" ({terms})')
    return out


def make_tables(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """Every collection's table and indexes as the table says now: a missing table is made, an
    existing one gains the generated columns of fields indexed since (before their indexes)."""
    for spec in specs:
        have = {r[1] for r in conn.execute(f'PRAGMA table_xinfo("{spec.name}")')}
        if have:
            for c in spec.columns():
                if c not in have:
                    conn.execute(
                        f'ALTER TABLE "{spec.name}" ADD COLUMN "{c}" '
                        f"GENERATED ALWAYS AS (json_extract(ix, '$.\"{c}\"')) VIRTUAL"
                    )
        for stmt in table_ddl(spec):
            conn.execute(stmt)


def _v1(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """The first layout: the collection tables and their indexes."""
    make_tables(conn, specs)


def _v2(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """Taskforces in EWMS's form: `collector` null when the location names none (was ""),
    `job_event_log_fpath` "" until submitted (was null)."""
    if "taskforces" not in {s.name for s in specs}:
        return
    for field, was, now in (("collector", "'text'", "json('null')"), ("job_event_log_fpath", "'null'", "''")):
        path = f"'$.\"{field}\"'"
        empty = f" AND json_extract(doc, {path}) = ''" if field == "collector" else ""
        conn.execute(
            f"UPDATE taskforces SET doc = json_set(doc, {path}, {now}) "
            f"WHERE json_type(doc, {path}) = {was}{empty}"
        )


def _v3(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """The `workflow_progress` table (progress history; every statement is IF NOT EXISTS, so
    only the new table is made), and taskforces with `task_counts` (zero) and `diagnosis`
    (null), which every taskforce shows from now on."""
    make_tables(conn, specs)
    if "taskforces" not in {s.name for s in specs}:
        return
    for field, value in (
        ("task_counts", """json('{"succeeded": 0, "failed": 0}')"""),
        ("diagnosis", "json('null')"),
    ):
        path = f"'$.\"{field}\"'"
        conn.execute(
            f"UPDATE taskforces SET doc = json_set(doc, {path}, {value}) WHERE json_type(doc, {path}) IS NULL"
        )


def _v4(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """The `secrets` table (users' encrypted secrets; the other tables exist already), and
    task directives with `secrets` (none on older ones), which every one shows from now on."""
    make_tables(conn, specs)
    if "task_directives" in {s.name for s in specs}:
        conn.execute(
            """UPDATE task_directives SET doc = json_set(doc, '$."secrets"', json('[]')) """
            """WHERE json_type(doc, '$."secrets"') IS NULL"""
        )


def _v5(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """The `webhook_outbox` table and the workflows' `notify_watch` index (IF NOT EXISTS, as in
    _v3), and workflows with `notify_url` (null) and `notify_watch` (false)."""
    make_tables(conn, specs)
    if "workflows" not in {s.name for s in specs}:
        return
    for field, value in (("notify_url", "json('null')"), ("notify_watch", "json('false')")):
        path = f"'$.\"{field}\"'"
        conn.execute(
            f"UPDATE workflows SET doc = json_set(doc, {path}, {value}) WHERE json_type(doc, {path}) IS NULL"
        )
    # `notify_watch` is an indexed field: its column reads `ix`
    conn.execute(
        """UPDATE workflows SET ix = json_set(ix, '$."notify_watch"', json('false'))
        WHERE json_type(ix, '$."notify_watch"') IS NULL"""
    )


def _v6(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """The `quarantine` and `machine_stats` tables (every statement is IF NOT EXISTS)."""
    make_tables(conn, specs)


def _v7(conn: sqlite3.Connection, specs: Iterable[CollectionSpec]) -> None:
    """The `jobs` table (script-and-files jobs; the other tables exist already)."""
    make_tables(conn, specs)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection, Iterable[CollectionSpec]], None]] = {
    1: _v1,
    2: _v2,
    3: _v3,
    4: _v4,
    5: _v5,
    6: _v6,
    7: _v7,
}
"""version -> the step that brings version-1 to it (append; never edit a released step)."""
assert max(MIGRATIONS) == SCHEMA_VERSION


def migrate(conn: sqlite3.Connection, specs: Iterable[CollectionSpec] = COLLECTIONS.values()) -> int:
    """Bring the store to SCHEMA_VERSION in one write transaction (another process migrating
    at the same time waits, then finds nothing left to do)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"the store has layout version {version}, newer than this server's {SCHEMA_VERSION}: "
                "run a newer ewms-server (or restore a backup made by this version)"
            )
        specs = list(specs)
        for step in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](conn, specs)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
