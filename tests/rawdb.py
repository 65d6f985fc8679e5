"""Direct database access for tamper tests: edits rows behind the ledger's back.

This is what a database administrator (or an attacker with the file) can do;
the tests then check that `ledger verify` names what was done.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import psycopg
from psycopg.sql import SQL, Identifier

from ledger.store import INDEX_TABLE
from ledger.verify import stream_id


class RawDB(Protocol):
    def state(self, stream: str, version: int) -> bytes: ...
    def set_state(self, stream: str, version: int, state: bytes) -> None: ...
    def set_topic(self, stream: str, version: int, topic: str) -> None: ...
    def delete(self, stream: str, version: int) -> None: ...
    def insert(self, stream: str, version: int, topic: str, state: bytes) -> None: ...
    def topic(self, stream: str, version: int) -> str: ...
    def on_index(self, statement: str, params: Sequence[Any] = ()) -> None: ...
    def close(self) -> None: ...


class SQLiteRaw:
    def __init__(self, path: str, table: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.table = table

    def _key(self, stream: str, version: int) -> tuple[str, int]:
        return stream_id(stream).hex, version

    def state(self, stream: str, version: int) -> bytes:
        row = self.db.execute(
            f"SELECT state FROM {self.table} WHERE originator_id=? AND originator_version=?",
            self._key(stream, version),
        ).fetchone()
        return bytes(row[0])

    def topic(self, stream: str, version: int) -> str:
        row = self.db.execute(
            f"SELECT topic FROM {self.table} WHERE originator_id=? AND originator_version=?",
            self._key(stream, version),
        ).fetchone()
        return str(row[0])

    def set_state(self, stream: str, version: int, state: bytes) -> None:
        self.db.execute(
            f"UPDATE {self.table} SET state=? WHERE originator_id=? AND originator_version=?",
            (state, *self._key(stream, version)),
        )

    def set_topic(self, stream: str, version: int, topic: str) -> None:
        self.db.execute(
            f"UPDATE {self.table} SET topic=? WHERE originator_id=? AND originator_version=?",
            (topic, *self._key(stream, version)),
        )

    def delete(self, stream: str, version: int) -> None:
        self.db.execute(
            f"DELETE FROM {self.table} WHERE originator_id=? AND originator_version=?",
            self._key(stream, version),
        )

    def insert(self, stream: str, version: int, topic: str, state: bytes) -> None:
        self.db.execute(
            f"INSERT INTO {self.table} VALUES (?,?,?,?)",
            (*self._key(stream, version), topic, state),
        )

    def on_index(self, statement: str, params: Sequence[Any] = ()) -> None:
        """Run `statement` ({t} the event-index table, ? placeholders) on the index."""
        self.db.execute(statement.format(t=INDEX_TABLE), params)

    def close(self) -> None:
        self.db.close()


class PostgresRaw:
    def __init__(self, url: str, table: str) -> None:
        parts = urlsplit(url)
        self.schema = parse_qs(parts.query).get("schema", ["public"])[0]
        self.conn = psycopg.connect(url.split("?")[0], autocommit=True)
        self.table = SQL("{}.{}").format(Identifier(self.schema), Identifier(table))

    def _key(self, stream: str, version: int) -> tuple[UUID, int]:
        return stream_id(stream), version

    def state(self, stream: str, version: int) -> bytes:
        row = self.conn.execute(
            SQL("SELECT state FROM {} WHERE originator_id=%s AND originator_version=%s").format(
                self.table
            ),
            self._key(stream, version),
        ).fetchone()
        assert row is not None
        return bytes(row[0])

    def topic(self, stream: str, version: int) -> str:
        row = self.conn.execute(
            SQL("SELECT topic FROM {} WHERE originator_id=%s AND originator_version=%s").format(
                self.table
            ),
            self._key(stream, version),
        ).fetchone()
        assert row is not None
        return str(row[0])

    def set_state(self, stream: str, version: int, state: bytes) -> None:
        self.conn.execute(
            SQL("UPDATE {} SET state=%s WHERE originator_id=%s AND originator_version=%s").format(
                self.table
            ),
            (state, *self._key(stream, version)),
        )

    def set_topic(self, stream: str, version: int, topic: str) -> None:
        self.conn.execute(
            SQL("UPDATE {} SET topic=%s WHERE originator_id=%s AND originator_version=%s").format(
                self.table
            ),
            (topic, *self._key(stream, version)),
        )

    def delete(self, stream: str, version: int) -> None:
        self.conn.execute(
            SQL("DELETE FROM {} WHERE originator_id=%s AND originator_version=%s").format(
                self.table
            ),
            self._key(stream, version),
        )

    def insert(self, stream: str, version: int, topic: str, state: bytes) -> None:
        self.conn.execute(
            SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES (%s,%s,%s,%s)"
            ).format(self.table),
            (*self._key(stream, version), topic, state),
        )

    def on_index(self, statement: str, params: Sequence[Any] = ()) -> None:
        table = SQL("{}.{}").format(Identifier(self.schema), Identifier(INDEX_TABLE))
        self.conn.execute(SQL(statement.replace("?", "%s")).format(t=table), params)

    def close(self) -> None:
        self.conn.close()


def raw_db_for(url: str, table: str) -> RawDB:
    if url.startswith("sqlite:///"):
        return SQLiteRaw(url.removeprefix("sqlite:///"), table)
    return PostgresRaw(url, table)
