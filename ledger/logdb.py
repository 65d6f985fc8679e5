"""Side tables beside the event store (the Merkle log's nodes, leaves, checkpoints and
cosignatures; API token hashes), on either store.

They live in the ledger's database beside the eventsourcing tables. One
integrator writes at a time: on PostgreSQL a transaction-scoped advisory lock,
on SQLite a `BEGIN IMMEDIATE` write transaction. Statements are written once
with `?` placeholders and adapted to the driver here, so nothing else in the
ledger knows which store it has.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from .errors import StoreUnavailable
from .store import DatabaseURL

TABLES = (
    "CREATE TABLE IF NOT EXISTS merkle_leaves (leaf_index {leaf_key} PRIMARY KEY, "
    "notification_id BIGINT NOT NULL, originator_id TEXT NOT NULL, seq BIGINT NOT NULL, "
    "event_hash {blob} NOT NULL, leaf_hash {blob} NOT NULL)",
    "CREATE INDEX IF NOT EXISTS merkle_leaves_event_hash ON merkle_leaves (event_hash)",
    "CREATE TABLE IF NOT EXISTS merkle_nodes (level INTEGER NOT NULL, idx BIGINT NOT NULL, "
    "hash {blob} NOT NULL, PRIMARY KEY (level, idx)){without_rowid}",
    "CREATE TABLE IF NOT EXISTS log_checkpoints (tree_size BIGINT PRIMARY KEY, "
    "root {blob} NOT NULL, note TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS log_cosignatures (tree_size BIGINT NOT NULL, "
    "witness TEXT NOT NULL, verifier_key TEXT NOT NULL, line TEXT NOT NULL, "
    "created_at TEXT NOT NULL, PRIMARY KEY (tree_size, witness))",
    "CREATE TABLE IF NOT EXISTS vault_meta (name TEXT PRIMARY KEY, value {blob} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vault_subjects (ref TEXT PRIMARY KEY, kind TEXT NOT NULL, "
    "wrapped_key {blob}, ciphertext {blob}, created_at TEXT NOT NULL, erased_at TEXT, "
    "erase_reason TEXT)",
    "CREATE TABLE IF NOT EXISTS vault_suppliers (ref TEXT NOT NULL, agency TEXT NOT NULL, "
    "added_at TEXT NOT NULL, PRIMARY KEY (ref, agency))",
    "CREATE TABLE IF NOT EXISTS vault_case_keys (case_id TEXT PRIMARY KEY, wrapped_key {blob}, "
    "created_at TEXT NOT NULL, erased_at TEXT, erase_reason TEXT, "
    "revision INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS vault_holds (target TEXT PRIMARY KEY, reason TEXT NOT NULL, "
    "set_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_tokens (token_hash TEXT PRIMARY KEY, name TEXT NOT NULL "
    "UNIQUE, role TEXT NOT NULL, agency TEXT, created_at TEXT NOT NULL, revoked_at TEXT)",
)

# Where the statements differ by store. On SQLite the leaf index is the table's rowid
# and the node table is kept in its key's order: one B-tree fewer to update for each
# leaf and each node integrated.
_DIALECT = {
    True: {"blob": "BLOB", "leaf_key": "INTEGER", "without_rowid": " WITHOUT ROWID"},
    False: {"blob": "BYTEA", "leaf_key": "BIGINT", "without_rowid": ""},
}


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class DuplicateRow(Exception):
    """A row's key is taken already: either driver's unique-constraint refusal."""


def _duplicate(e: Exception) -> bool:
    if isinstance(e, sqlite3.IntegrityError):
        return str(e).startswith("UNIQUE constraint failed")
    # Only a PostgreSQL log, which has psycopg imported already, raises psycopg's
    # errors; a SQLite-only install may not have it at all.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(e, psycopg.errors.UniqueViolation)


@contextmanager
def _duplicates_named() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if _duplicate(e):
            raise DuplicateRow(str(e)) from e
        raise


class LogDB:
    """A connection to the log tables, with `?` statements adapted to the driver."""

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url
        self.placeholder = "?" if url.is_sqlite else "%s"
        self._conn: Any = None
        self._lock = threading.RLock()  # one connection, used by one thread at a time
        with self.write() as cur:
            for statement in TABLES:
                cur.execute(statement.format(**_DIALECT[url.is_sqlite]))

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", "%s")

    def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self.url.is_sqlite:
            conn: Any = sqlite3.connect(
                Path(self.url.path), isolation_level=None, timeout=30, check_same_thread=False
            )
            conn.execute("PRAGMA secure_delete = ON")  # erased vault data is zeroed on disk
        else:
            import psycopg

            from .pgstore import conninfo

            try:
                conn = psycopg.connect(conninfo(self.url), autocommit=True)
            except psycopg.Error as e:
                raise StoreUnavailable(f"cannot connect to PostgreSQL: {e}") from None
            conn.execute(f'SET search_path TO "{self.url.schema}"')
        self._conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[_Adapted]:
        """A write transaction holding the single-integrator lock."""
        with self._lock:
            yield from self._write()

    def _write(self) -> Iterator[_Adapted]:
        conn = self._connection()
        if self.url.is_sqlite:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
        else:
            conn.execute("BEGIN")
            cur = conn.cursor()
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                ["ledger-integrator:" + self.url.schema],
            )
        try:
            yield _Adapted(cur, self)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[_Adapted]:
        with self._lock:
            cur = self._connection().cursor()
            yield _Adapted(cur, self)

    def stream(self, sql: str) -> Iterator[Any]:
        """Rows of a large query, fetched a page at a time (server-side on PostgreSQL)."""
        with self._lock:
            conn = self._connection()
            if self.url.is_sqlite:
                yield from conn.execute(sql)
                return
            import secrets

            with conn.cursor(name=f"stream_{secrets.token_hex(4)}", withhold=True) as cur:
                cur.itersize = 2000
                cur.execute(self.sql(sql))
                yield from cur

    def scrub(self, table: str) -> None:
        """Leave no old copy of `table`'s rows on disk (after crypto-shredding)."""
        with self._lock:
            conn = self._connection()
            if self.url.is_sqlite:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn.execute(f'VACUUM FULL "{table}"')

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Adapted:
    """A cursor taking `?` placeholders whatever the driver; a row whose key is taken
    is refused as `DuplicateRow` whatever the driver."""

    def __init__(self, cur: Any, db: LogDB) -> None:
        self.cur = cur
        self.db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Adapted:
        with _duplicates_named():
            self.cur.execute(self.db.sql(sql), params)
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with _duplicates_named():
                self.cur.executemany(self.db.sql(sql), rows)

    def insert_rows(self, table: str, types: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """`rows` into `table`, its columns of PostgreSQL `types`. On PostgreSQL one
        statement takes them all as arrays, one a column: psycopg's executemany sends
        and reads back a statement for each row, which cost the integrator more than
        hashing the tree."""
        if not rows:
            return
        if self.db.url.is_sqlite:
            places = ", ".join("?" * len(types))
            self.executemany(f"INSERT INTO {table} VALUES ({places})", rows)
            return
        from .pgstore import columns  # a PostgreSQL log: psycopg is installed

        arrays = ", ".join(f"%b::{t}[]" for t in types)
        with _duplicates_named():
            self.cur.execute(f"INSERT INTO {table} SELECT * FROM unnest({arrays})", columns(rows))

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cur.fetchall())

    def __iter__(self) -> Iterator[Any]:
        while True:
            rows = self.cur.fetchmany(1000)
            if not rows:
                return
            yield from rows
