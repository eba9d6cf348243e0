"""The SQLite driver (stdlib sqlite3): the default, durable, embedded store.

Threads, so that no call holds the event loop: one writer thread owns the only writing
connection (every write is one `BEGIN IMMEDIATE` transaction, committed before the call
returns), a few reader threads serve the server's own reads, and separate query threads serve
budgeted /v1/query/* reads, so a slow query never delays a TMS poll or a health check.
Filters are compiled (`sql_filter`) inside the worker thread, too. WAL checkpoints run on a
thread of their own (`sqlite_threads.Checkpointer`), never inside a request's transaction.

WAL mode: readers never wait for the writer. Several server processes may share one file:
SQLite's locks serialize their write transactions (each waits up to the busy timeout), and a
claim selects and updates its taskforce inside one write transaction, so no two callers can
claim the same one. A commit has reached the operating system before it returns, so killing
the process loses nothing that was acknowledged; `synchronous` decides what a power cut may
lose (FULL: nothing; NORMAL: the last transactions, never consistency).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from . import sqlite_schema
from .base import Change, Doc, DuplicateKey, Filter, FilterTooComplex, Projection, QueryTimeout, Sort
from .collections import COLLECTIONS, CollectionSpec
from .projection import project, projection_tree
from .sql_filter import compile_filter, compile_sort, json_equal
from .sqlite_threads import WRITER_CHECKPOINT_PAGES, Checkpointer, Workers

SYNCHRONOUS = ("FULL", "NORMAL")
_TOO_COMPLEX = ("parser stack overflow", "Expression tree is too large", "too many SQL variables")
_PROGRESS_STEPS = 1000
"""SQLite VM steps between checks of a query's deadline (a few microseconds of work)."""
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes the WAL file is cut back to once a checkpoint has emptied it (after a burst)."""


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; the lock is taken first, so it never fails half-way for lack of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(e, sqlite3.IntegrityError):
            raise DuplicateKey(str(e)) from None
        raise


def _dump(doc: Mapping[str, Any]) -> str:
    return orjson.dumps(doc).decode()


class SQLiteStorage:
    """`Storage` on one SQLite file; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        readers: int = 2,
        query_workers: int = 2,
        collections: Mapping[str, CollectionSpec] = COLLECTIONS,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}")
        self.path = path
        self._sync = synchronous
        self._busy_s = busy_timeout_s
        self._specs = dict(collections)
        self._kinds = {
            name: {c: frozenset(spec.kinds[c].split("|")) for c in spec.columns()}
            for name, spec in self._specs.items()
        }
        self._columns = {name: frozenset(spec.columns()) for name, spec in self._specs.items()}
        if not os.path.exists(path):  # the WAL and shared-memory files inherit this mode
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._checkpointer = Checkpointer(lambda: self._connect(checkpoint=True))
        self._writer = Workers(
            "ewms-sqlite-writer", 1, lambda: self._connect(write=True), after=self._checkpointer.wake
        )
        self._readers = Workers("ewms-sqlite-reader", readers, self._connect)
        self._queries = Workers("ewms-sqlite-query", query_workers, self._connect)

    def _connect(self, write: bool = False, checkpoint: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_s, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous = {self._sync}")
        if write:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_CHECKPOINT_PAGES}")  # see sqlite_threads
        if write or checkpoint:
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        else:
            conn.execute("PRAGMA query_only = 1")
        conn.create_function("ewms_json_eq", 2, json_equal, deterministic=True)
        return conn

    def _table(self, coll: str) -> str:
        if coll not in self._specs:
            raise ValueError(f"unknown collection {coll!r}")
        return f'"{coll}"'

    def _where(self, coll: str, flt: Filter) -> tuple[str, list[Any]]:
        return compile_filter(flt, self._kinds[coll])

    def _row(self, coll: str, doc: Mapping[str, Any]) -> tuple[str, str]:
        """(doc, ix): the document, and its indexed fields the columns are generated from."""
        return _dump(doc), _dump({c: doc[c] for c in self._columns[coll] if c in doc})

    def _rewrite(
        self, conn: sqlite3.Connection, coll: str, rows: list[tuple[int, str]], change: Change
    ) -> list[Doc]:
        """Inside a write transaction: apply `change` to these (seq, doc) rows, touching the
        indexed columns only if the change writes an indexed field; return the new documents."""
        table = self._table(coll)
        docs = [change.apply(orjson.loads(doc)) for _, doc in rows]
        seqs = [seq for seq, _ in rows]
        if self._columns[coll].isdisjoint([*change.set, *change.push]):
            values: list[tuple[Any, ...]] = [(_dump(d), seq) for d, seq in zip(docs, seqs, strict=True)]
            conn.executemany(f"UPDATE {table} SET doc = ? WHERE seq = ?", values)
        else:
            values = [(*self._row(coll, d), seq) for d, seq in zip(docs, seqs, strict=True)]
            conn.executemany(f"UPDATE {table} SET doc = ?, ix = ? WHERE seq = ?", values)
        return docs

    # -- layout --------------------------------------------------------------------------------

    async def migrate(self) -> int:
        specs = list(self._specs.values())
        return await self._writer.run(lambda conn: sqlite_schema.migrate(conn, specs))

    async def schema_version(self) -> int:
        return await self._readers.run(lambda conn: int(conn.execute("PRAGMA user_version").fetchone()[0]))

    async def ping(self) -> None:
        await self._readers.run(lambda conn: conn.execute("SELECT count(*) FROM sqlite_master").fetchone())

    async def close(self) -> None:
        for workers in (self._queries, self._readers, self._writer, self._checkpointer):
            await asyncio.to_thread(workers.stop)

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, coll: str, filter: Filter, *, projection: Projection = None) -> Doc | None:
        docs = await self.find(coll, filter, projection=projection, limit=1)
        return docs[0] if docs else None

    async def find(
        self,
        coll: str,
        filter: Filter,
        *,
        projection: Projection = None,
        sort: Sort | None = None,
        limit: int = 0,
        budget_s: float | None = None,
    ) -> list[Doc]:
        table = self._table(coll)
        if limit < 0:
            raise ValueError("limit must be >= 0")
        tree = projection_tree(projection) if projection else None

        def job(conn: sqlite3.Connection) -> list[Doc]:
            where, params = self._where(coll, filter)
            order = compile_sort(sort, self._kinds[coll]) if sort else "seq"
            sql = f"SELECT doc FROM {table} WHERE {where} ORDER BY {order} LIMIT ?{len(params) + 1}"
            with self._deadline(conn, budget_s):
                rows = conn.execute(sql, [*params, limit or -1])
                docs = [orjson.loads(r[0]) for r in rows]
            return [project(d, tree) for d in docs] if tree is not None else docs

        return await (self._queries if budget_s is not None else self._readers).run(job)

    @contextlib.contextmanager
    def _deadline(self, conn: sqlite3.Connection, budget_s: float | None) -> Iterator[None]:
        if budget_s is None:
            yield
            return
        deadline = time.monotonic() + budget_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        try:
            yield
        except sqlite3.OperationalError as e:
            if "interrupted" in str(e):
                raise QueryTimeout(f"stopped after {budget_s:g} s") from None
            if any(m in str(e) for m in _TOO_COMPLEX):
                raise FilterTooComplex(f"SQLite cannot take this filter: {e}") from None
            raise
        finally:
            conn.set_progress_handler(None, 0)

    async def count(self, coll: str, filter: Filter) -> int:
        table = self._table(coll)

        def job(conn: sqlite3.Connection) -> int:
            where, params = self._where(coll, filter)
            return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0])

        return await self._readers.run(job)

    async def count_by(self, coll: str, fields: Sequence[str], filter: Filter) -> dict[tuple[Any, ...], int]:
        table = self._table(coll)
        if not fields or not set(fields) <= self._columns[coll]:
            raise ValueError(f"count_by on {coll}: only indexed fields, not {sorted(fields)}")
        cols = ", ".join(f'"{f}"' for f in fields)
        booleans = [self._kinds[coll][f] == {"boolean"} for f in fields]

        def job(conn: sqlite3.Connection) -> dict[tuple[Any, ...], int]:
            where, params = self._where(coll, filter)
            sql = f"SELECT {cols}, count(*) FROM {table} WHERE {where} GROUP BY {cols}"
            out: dict[tuple[Any, ...], int] = {}
            for row in conn.execute(sql, params):
                # json_extract gives SQL integers for JSON booleans: give them back as booleans
                key = tuple(
                    bool(v) if b and v is not None else v for v, b in zip(row[:-1], booleans, strict=True)
                )
                out[key] = out.get(key, 0) + int(row[-1])
            return out

        return await self._readers.run(job)

    # -- writes --------------------------------------------------------------------------------

    async def insert(self, coll: str, docs: Sequence[Mapping[str, Any]]) -> None:
        await self.insert_bundle([(coll, docs)])

    async def insert_bundle(self, bundle: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]) -> None:
        tables = [(coll, self._table(coll), docs) for coll, docs in bundle]

        def job(conn: sqlite3.Connection) -> None:
            rows = [(t, [self._row(coll, d) for d in docs]) for coll, t, docs in tables]
            with _write(conn):
                for table, values in rows:
                    conn.executemany(f"INSERT INTO {table} (doc, ix) VALUES (?, ?)", values)

        await self._writer.run(job)

    def _change_first(
        self, conn: sqlite3.Connection, coll: str, flt: Filter, change: Change, order: str
    ) -> Doc | None:
        """Inside a write transaction: change the first match by `order`; return it changed."""
        table = self._table(coll)
        where, params = self._where(coll, flt)
        row = conn.execute(
            f"SELECT seq, doc FROM {table} WHERE {where} ORDER BY {order} LIMIT 1", params
        ).fetchone()
        return None if row is None else self._rewrite(conn, coll, [row], change)[0]

    async def claim(self, coll: str, filter: Filter, *, sort: Sort, change: Change) -> Doc | None:
        order = compile_sort(sort, self._kinds[coll])

        def job(conn: sqlite3.Connection) -> Doc | None:
            with _write(conn):
                return self._change_first(conn, coll, filter, change, order)

        return await self._writer.run(job)

    async def transition(self, coll: str, filter: Filter, change: Change) -> bool:
        return (await self.update_each(coll, [(filter, change)]))[0]

    async def update_each(self, coll: str, updates: Sequence[tuple[Filter, Change]]) -> list[bool]:
        def job(conn: sqlite3.Connection) -> list[bool]:
            with _write(conn):
                return [self._change_first(conn, coll, f, c, "seq") is not None for f, c in updates]

        return await self._writer.run(job)

    async def update_where(self, coll: str, filter: Filter, change: Change) -> int:
        table = self._table(coll)

        def job(conn: sqlite3.Connection) -> int:
            where, params = self._where(coll, filter)
            with _write(conn):
                rows = conn.execute(f"SELECT seq, doc FROM {table} WHERE {where}", params).fetchall()
                self._rewrite(conn, coll, rows, change)
            return len(rows)

        return await self._writer.run(job)

    async def delete_where(self, coll: str, filter: Filter) -> int:
        table = self._table(coll)

        def job(conn: sqlite3.Connection) -> int:
            where, params = self._where(coll, filter)
            with _write(conn):
                return int(conn.execute(f"DELETE FROM {table} WHERE {where}", params).rowcount)

        return await self._writer.run(job)
