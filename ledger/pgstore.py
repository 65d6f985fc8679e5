"""PostgreSQL side of the store (the `postgres` extra): recorder with index, catalog queries."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import get_topic
from psycopg import Connection, Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from .errors import NarrativeErased, NotFound, StoreUnavailable
from .store import (
    INDEX_COLUMNS,
    INDEX_TABLE,
    NARRATIVE_DDL,
    NARRATIVE_INDEX_DDL,
    NARRATIVE_TABLE,
    DatabaseURL,
    LedgerApplication,
    Store,
    before_commit,
    stored_bytes,
    stored_int,
)

# eventsourcing names the events table after the application ("Ledger").
EVENTS_TABLE = LedgerApplication.name.lower() + "_events"

CONNECT_TIMEOUT_S = 5
# The switch interval while a write transaction is held (see TransactionWriter).
HANDOVER_S = 0.0005


@dataclass
class _Held:
    """A write transaction in progress: its connection, and what ends the transaction,
    its pipeline and the connection's loan from the pool."""

    conn: Connection[DictRow]
    stack: contextlib.ExitStack


class _Writer(threading.local):
    held: _Held | None = None


class IndexedPostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder that also writes the event-id index in the same transaction."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.writer = _Writer()  # this thread's write transaction, if it holds one
        schema = Identifier(datastore.schema)
        table = Identifier(INDEX_TABLE)
        # The index table's DDL goes first: a writer locks it before the events
        # table, so DDL taking the two in the same order cannot deadlock with it.
        self.sql_create_statements[0:0] = [
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (event_id text PRIMARY KEY, "
                "stream text NOT NULL, originator_id text NOT NULL, seq bigint NOT NULL, "
                "type text NOT NULL, agency text NOT NULL, occurred_at text NOT NULL, "
                "recorded_at text NOT NULL)"
            ).format(schema, table),
            SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (stream, seq)").format(
                Identifier(INDEX_TABLE + "_stream"), schema, table
            ),
        ]
        narrative = Identifier(NARRATIVE_TABLE)
        self.sql_create_statements[2:2] = [
            SQL(NARRATIVE_DDL.format(table="{}.{}", blob="bytea")).format(schema, narrative),
            SQL(NARRATIVE_INDEX_DDL.format(name="{}", table="{}.{}")).format(
                Identifier(NARRATIVE_TABLE + "_case"), schema, narrative
            ),
        ]
        # One statement each, not executemany: psycopg pipelines executemany, and a
        # repeated event id (a retry another worker recorded first) then surfaces as
        # "pipeline aborted", a database error, not the unique violation it is,
        # which the append path answers by looking the id up.
        self.insert_index_statement = SQL(
            "INSERT INTO {}.{} SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], "
            "%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[])"
        ).format(schema, table)
        self.insert_narrative_statement = SQL(
            "INSERT INTO {}.{} (event_id, field, case_id, sealed) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[])"
        ).format(schema, narrative)
        # The stored events as four arrays in binary form. eventsourcing's own insert
        # passes one array of a composite type, which psycopg writes out as text in
        # Python, state bytes escaped one by one: measured, 1.1-1.5 ms for 15 events
        # of 1 KB against 0.27 ms this way, most of a group commit's own time.
        self.insert_columns_statement = SQL(
            "INSERT INTO {}.{} AS t (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(
            schema,
            Identifier(self.events_table_name),
            SQL(datastore.originator_id_type),
        )
        self.case_keys_statement = SQL(
            "SELECT case_id, erased_at FROM {}.vault_case_keys WHERE case_id = ANY(%s) "
            "ORDER BY case_id FOR SHARE"
        ).format(schema)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        held = self.writer.held
        if held is None:
            done: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
            return done
        # Within the writer's transaction (`TransactionWriter`): the inserts go with its
        # COMMIT, in one round trip. A repeated id or version is raised there, as the
        # unique violation it is, and nothing is committed; notification ids are not
        # returned (the ledger has no use for them).
        with held.conn.cursor() as curs:
            self._insert_events(curs, stored_events, **kwargs)
        if stored_events:
            with held.conn.cursor() as curs:
                self._insert_stored_events(curs, stored_events, **kwargs)
        return None

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # The first statement of eventsourcing's write pipeline. psycopg prepares a
        # statement on its sixth run and, in a pipeline, counts it prepared before the
        # server answers; when an earlier statement of the pipeline fails (a repeated
        # event id, which the append path answers), the server skips the PREPARE and
        # every later run on this connection fails: "prepared statement does not
        # exist". Connections that write therefore prepare nothing.
        curs.connection.prepare_threshold = None
        rows = kwargs.get("index_rows")
        if rows:
            curs.execute(self.insert_index_statement, columns(rows))
        sealed = before_commit(kwargs)
        if sealed:
            # FOR SHARE waits for an erasure in flight (it locks the row FOR UPDATE) and
            # holds one off until this transaction ends.
            curs.execute(self.case_keys_statement, [sorted({row[2] for row in sealed})])
            for row in curs.fetchall():
                if row["erased_at"] is not None:
                    raise NarrativeErased(str(row["case_id"]), str(row["erased_at"]))
            curs.execute(self.insert_narrative_statement, columns(sealed))

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # As eventsourcing's: the table lock orders notification ids by commit, the
        # notification wakes its subscribers; then the rows, in the order given,
        # their notification ids returned in that order.
        self._lock_table(curs)
        self._notify_channel(curs)
        if self.datastore.originator_id_type == "uuid":
            ids: list[Any] = [
                e.originator_id if isinstance(e.originator_id, UUID) else UUID(e.originator_id)
                for e in stored_events
            ]
        else:
            ids = [str(e.originator_id) for e in stored_events]
        curs.execute(
            self.insert_columns_statement,
            (
                ids,
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )


def stream_lock_key(oid: UUID) -> int:
    """A stream's advisory lock key: 32 bits of its id (two streams sharing one only
    take turns)."""
    return int.from_bytes(oid.bytes[:4], "big", signed=True)


def _uuid(value: Any) -> UUID:
    """A uuid column's value (psycopg gives UUIDs) as a UUID, without parsing it again."""
    return value if isinstance(value, UUID) else UUID(str(value))


def columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows as one array per column, for an INSERT ... SELECT FROM unnest(...)."""
    return [list(column) for column in zip(*rows, strict=True)]


class PostgresCatalog:
    def __init__(self, recorder: IndexedPostgresRecorder) -> None:
        self.recorder = recorder
        self.schema = recorder.datastore.schema
        self.lock_space = "ledger-streams:" + self.schema
        self.events_table: str = recorder.events_table_name

    def _query(self, sql: SQL | Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        held = self.recorder.writer.held
        if held is not None:
            # In the write transaction, sent with whatever the pipeline holds (the
            # stream locks, first), in one round trip.
            return [tuple(row.values()) for row in held.conn.execute(sql, params).fetchall()]
        # One statement on an autocommit connection: one round trip, where an explicit
        # read transaction would add a BEGIN and a ROLLBACK to each query.
        with self.recorder.datastore.get_connection() as conn:
            return [tuple(row.values()) for row in conn.execute(sql, params).fetchall()]

    def _events(self) -> Any:
        return SQL("{}.{}").format(Identifier(self.schema), Identifier(self.events_table))

    def _index(self) -> Any:
        return SQL("{}.{}").format(Identifier(self.schema), Identifier(INDEX_TABLE))

    def stream_counts(self) -> tuple[list[tuple[UUID, int]], list[tuple[str, int]]]:
        """Each stream's id and number of events, in the order the streams began; no
        foreign originator ids (the column holds only UUIDs)."""
        rows = self._query(
            SQL(
                "SELECT originator_id, COUNT(*) FROM {} GROUP BY originator_id "
                "ORDER BY MIN(notification_id)"
            ).format(self._events())
        )
        return [(_uuid(r[0]), int(r[1])) for r in rows], []

    def lookup(self, event_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        rows = self._query(
            SQL("SELECT event_id, originator_id, seq FROM {} WHERE event_id = ANY(%s)").format(
                self._index()
            ),
            [list(event_ids)],
        )
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def index_rows(self, stream_prefix: str) -> list[tuple[Any, ...]]:
        return self._query(
            SQL(
                "SELECT " + INDEX_COLUMNS + " FROM {} WHERE stream LIKE %s ORDER BY stream, seq"
            ).format(self._index()),
            [stream_prefix + "%"],
        )

    def notifications_after(self, last: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        rows = self._query(
            SQL(
                "SELECT notification_id, originator_id, originator_version, state FROM {} "
                "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
            ).format(self._events()),
            [last, limit],
        )
        return [(int(r[0]), _uuid(r[1]).hex, stored_int(r[2]), stored_bytes(r[3])) for r in rows]

    def streams_mentioning(self, text: str) -> list[str]:
        rows = self._query(
            SQL(
                "SELECT DISTINCT i.stream FROM {} e JOIN {} i ON i.originator_id = "
                "replace(e.originator_id::text, '-', '') AND i.seq = e.originator_version "
                "WHERE position(%s::bytea in e.state) > 0 AND i.stream LIKE 'case/%%'"
            ).format(self._events(), self._index()),
            [text.encode()],
        )
        return [str(r[0]) for r in rows]

    def iter_index(self, upto: int) -> Iterator[tuple[Any, ...]]:
        """Every event-index row, in bytewise event id order (collation "C", as
        SQLite's), streamed through a server-side cursor (for verify), but those of
        events stored after position `upto` (a verify started before they were
        written reads neither)."""
        # A text comparison: the index row's originator may be anything an edit left.
        late = SQL(
            " x WHERE NOT EXISTS (SELECT 1 FROM {} e WHERE e.notification_id > %s AND "
            "replace(e.originator_id::text, '-', '') = x.originator_id AND "
            "e.originator_version = x.seq)"
        ).format(self._events())
        with (
            self.recorder.datastore.get_connection() as conn,
            conn.transaction(force_rollback=True),
            conn.cursor(name="ledger_verify_index") as cur,
        ):
            cur.itersize = 5000
            cur.execute(
                SQL("SELECT " + INDEX_COLUMNS + ' FROM {}{} ORDER BY event_id COLLATE "C"').format(
                    self._index(), late
                ),
                [upto],
            )
            for row in cur:
                yield tuple(row.values()) if isinstance(row, dict) else tuple(row)

    def streams_after(self, after: str, prefix: str, limit: int) -> list[str]:
        rows = self._query(
            SQL(
                "SELECT DISTINCT stream FROM {} WHERE stream > %s AND stream LIKE %s "
                "ORDER BY stream LIMIT %s"
            ).format(self._index()),
            [after, prefix + "%", limit],
        )
        return [str(r[0]) for r in rows]

    def heads(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        # A subquery per stream reads one index entry each; a GROUP BY over the ids
        # would read every event of every stream, slowing appends as cases grow.
        rows = self._query(
            SQL(
                "SELECT ids.id, (SELECT MAX(originator_version) FROM {} "
                "WHERE originator_id = ids.id) FROM unnest(%s::uuid[]) AS ids(id)"
            ).format(self._events()),
            [list(ids)],
        )
        return {_uuid(r[0]): int(r[1]) for r in rows if r[1] is not None}

    def stream_page(self, oid: UUID, after: int, limit: int) -> list[tuple[int, bytes, int]]:
        """(version, stored bytes, notification id) of a stream's events after `after`."""
        rows = self._query(
            SQL(
                "SELECT originator_version, state, notification_id FROM {} "
                "WHERE originator_id = %s AND originator_version > %s "
                "ORDER BY originator_version LIMIT %s"
            ).format(self._events()),
            [oid, after, limit],
        )
        return [(stored_int(r[0]), stored_bytes(r[1]), int(r[2])) for r in rows]

    def lock_streams(self, written: Collection[UUID], read: Collection[UUID]) -> None:
        """Take the write transaction's stream locks: exclusive on the streams it
        writes, shared on those it only reads (the agencies whose keys signed it), so
        that a batch never waits on another unless they share a case or one of them
        changes an agency's keys the other relies on. Sent in the pipeline, answered
        with the heads read that follows: one round trip for both.

        Transaction-level advisory locks, keyed by the schema and the stream, which
        PostgreSQL lets go of as the transaction commits or rolls back (or its
        connection dies), once what it wrote is visible to the next. All of a
        transaction's are taken by one statement, in key order, so two writers cannot
        each hold one the other waits for."""
        held = self.recorder.writer.held
        if held is None:
            raise RuntimeError("stream locks are taken in a write transaction")
        keys = {stream_lock_key(oid): False for oid in read}
        keys.update((stream_lock_key(oid), True) for oid in written)
        order = sorted(keys)
        held.conn.execute(
            "SELECT CASE WHEN x THEN pg_advisory_xact_lock(hashtext(%s), k) "
            "ELSE pg_advisory_xact_lock_shared(hashtext(%s), k) END "
            "FROM unnest(%s::int[], %s::bool[]) AS t(k, x)",
            [self.lock_space, self.lock_space, order, [keys[k] for k in order]],
        )

    def current(self, held: Sequence[tuple[UUID, int]]) -> dict[UUID, tuple[int, bytes | None]]:
        """Each stream's latest version, with its newest stored bytes unless that is
        the version already held: one query (an index lookup per stream), so one
        round trip while the batch's streams are locked."""
        rows = self._query(
            SQL(
                "SELECT ids.id, e.originator_version, CASE WHEN e.originator_version = ids.v "
                "THEN NULL ELSE e.state END FROM unnest(%s::uuid[], %s::bigint[]) AS ids(id, v) "
                "CROSS JOIN LATERAL (SELECT originator_version, state FROM {} "
                "WHERE originator_id = ids.id ORDER BY originator_version DESC LIMIT 1) AS e"
            ).format(self._events()),
            [[oid for oid, _ in held], [version for _, version in held]],
        )
        return {_uuid(r[0]): (int(r[1]), None if r[2] is None else bytes(r[2])) for r in rows}

    def count_events(self) -> int:
        return int(self._query(SQL("SELECT COUNT(*) FROM {}").format(self._events()))[0][0])

    def last_position(self) -> int:
        """The newest event's position in commit order (0 for none)."""
        return int(
            self._query(
                SQL("SELECT COALESCE(MAX(notification_id), 0) FROM {}").format(self._events())
            )[0][0]
        )

    def streams_opened_as(self, topics: Sequence[str]) -> list[UUID]:
        """As SQLiteCatalog.streams_opened_as (the uuid column holds stream ids only)."""
        rows = self._query(
            SQL(
                "SELECT originator_id FROM {} WHERE originator_version = 1 AND topic = ANY(%s)"
            ).format(self._events()),
            [list(topics)],
        )
        return [_uuid(r[0]) for r in rows]

    def odd_topics(
        self, first: Sequence[str], later: Sequence[str], upto: int
    ) -> list[tuple[Any, int, Any]]:
        """As SQLiteCatalog.odd_topics."""
        return self._query(
            SQL(
                "SELECT originator_id, originator_version, topic FROM {} WHERE "
                "notification_id <= %s AND NOT ((originator_version = 1 AND topic = ANY(%s)) "
                "OR (originator_version > 1 AND topic = ANY(%s)))"
            ).format(self._events()),
            [upto, list(first), list(later)],
        )


def conninfo(url: DatabaseURL) -> str:
    return psycopg.conninfo.make_conninfo(
        host=url.host,
        port=url.port,
        user=url.user,
        password=url.password or None,
        dbname=url.dbname,
        connect_timeout=CONNECT_TIMEOUT_S,
    )


class TransactionWriter:
    """A batch's write transaction: it locks the batch's streams
    (`PostgresCatalog.lock_streams`), reads their heads and writes after them.

    One connection and one transaction, in psycopg's pipeline: taking the locks and
    reading the heads is one round trip, and nothing has to be sent to let go of the
    locks, which PostgreSQL releases when the transaction commits or rolls back (or
    its session dies), only once the batch is visible to the next writer. While it
    is held, this thread's catalog reads and the recorder's insert use its
    connection (`IndexedPostgresRecorder.writer`); errors come out as eventsourcing's,
    as from any other write.

    Every answer from the database has to win the interpreter back before the batch
    can go on, and other writers may be waiting on its locks meanwhile (on its cases,
    or on the events table, which eventsourcing locks from the insert to the commit):
    while it is held, this process's other threads (an API worker's event loop) are
    asked to hand the interpreter over within HANDOVER_S rather than the usual five
    milliseconds."""

    def __init__(self, recorder: IndexedPostgresRecorder) -> None:
        self.recorder = recorder

    def __enter__(self) -> object:
        with contextlib.ExitStack() as stack:
            stack.callback(sys.setswitchinterval, sys.getswitchinterval())  # restored last
            sys.setswitchinterval(min(sys.getswitchinterval(), HANDOVER_S))
            conn = stack.enter_context(self.recorder.datastore.get_connection())
            conn.prepare_threshold = None  # as every writing connection: see _insert_events
            stack.enter_context(conn.pipeline())
            stack.enter_context(conn.transaction())
            conn.execute("SET LOCAL lock_timeout = '30s'")
            self.recorder.writer.held = _Held(conn, stack.pop_all())
        return self

    def __exit__(self, *exc: Any) -> None:
        held = self.recorder.writer.held
        self.recorder.writer.held = None
        if held is not None:
            # Commits, or rolls back on the way out of an error; a commit that fails
            # raises, so the batch's receipts are never returned.
            held.stack.__exit__(*exc)

    def close(self) -> None:
        """Nothing of its own to close: its connections are the pool's."""


def open_postgres(url: DatabaseURL, create: bool = True) -> Store:
    # DDL from two processes at once fails ("tuple concurrently updated"), so
    # opening holds an advisory lock while tables are created or checked.
    try:
        lock_conn = psycopg.connect(conninfo(url), autocommit=True)
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {url.host}:{url.port}/{url.dbname}: {reason}"
        ) from None
    with lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(hashtext(%s))", ["ledger-ddl:" + url.schema])
        # Opening an existing ledger runs no DDL: CREATE INDEX IF NOT EXISTS still
        # takes a SHARE lock, which would stall (or deadlock with) live writers.
        exists = lock_conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL "
            "AND to_regclass(%s) IS NOT NULL",
            [
                f'"{url.schema}"."{EVENTS_TABLE}"',
                f'"{url.schema}"."{INDEX_TABLE}"',
                f'"{url.schema}"."{NARRATIVE_TABLE}"',
            ],
        ).fetchone()
        create_tables = not (exists and exists[0])
        if create_tables and not create:
            # A verb other than init on a mistyped schema must not make an empty ledger.
            raise NotFound(f"no ledger in {url.describe()}: run 'ledger init' first")
        if create_tables:
            lock_conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(url.schema)))
        try:
            app = LedgerApplication(
                env={
                    "PERSISTENCE_MODULE": "eventsourcing.postgres",
                    "POSTGRES_DBNAME": url.dbname,
                    "POSTGRES_HOST": url.host,
                    "POSTGRES_PORT": str(url.port),
                    "POSTGRES_USER": url.user,
                    "POSTGRES_PASSWORD": url.password,
                    "POSTGRES_SCHEMA": url.schema,
                    "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
                    "POSTGRES_LOCK_TIMEOUT": "30",
                    "POSTGRES_POOL_SIZE": "4",
                    "POSTGRES_MAX_OVERFLOW": "4",
                    "APPLICATION_RECORDER_TOPIC": get_topic(IndexedPostgresRecorder),
                    "AGGREGATE_CACHE_MAXSIZE": "20000",
                    "CREATE_TABLE": "y" if create_tables else "n",
                }
            )
        except (PersistenceError, psycopg.Error, OSError) as e:
            raise StoreUnavailable(
                f"cannot open PostgreSQL ledger at {url.describe()}: {e}"
            ) from None
        finally:
            lock_conn.execute(
                "SELECT pg_advisory_unlock(hashtext(%s))", ["ledger-ddl:" + url.schema]
            )
    recorder = app.recorder
    assert isinstance(recorder, IndexedPostgresRecorder)
    return Store(url, app, PostgresCatalog(recorder), TransactionWriter(recorder))
