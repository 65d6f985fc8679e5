"""Storage: the eventsourcing Application wired to SQLite (default) or PostgreSQL.

The store is chosen once, from the database URL; nothing else in the ledger asks
which one it has. Stored event state is the canonical envelope, byte for byte,
so what the database holds is exactly what was hashed and signed. Alongside the
eventsourcing tables, each recorder keeps `ledger_event_index` (event id → stream
and seq, for idempotency and listings), written in the same transaction as the
events; verification never trusts it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError as StoreIntegrityError
from eventsourcing.persistence import (
    Mapper,
    OperationalError,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteApplicationRecorder, SQLiteCursor
from eventsourcing.utils import get_topic

from .case import event_class, read_stored, stored_at
from .errors import DamagedRecord, NarrativeErased, NotFound, StoreUnavailable, UsageError
from .verify import stream_id

DEFAULT_DB = "sqlite:///var/ledger.sqlite"
INDEX_TABLE = "ledger_event_index"
INDEX_COLUMNS = "event_id, stream, originator_id, seq, type, agency, occurred_at, recorded_at"
# Sealed narrative (see ledger/narrative.py), written in the same transaction as its event.
NARRATIVE_TABLE = "ledger_narrative"
NARRATIVE_DDL = (
    "CREATE TABLE IF NOT EXISTS {table} (event_id TEXT NOT NULL, field TEXT NOT NULL, "
    "case_id TEXT NOT NULL, sealed {blob}, erased TEXT, PRIMARY KEY (event_id, field))"
)
NARRATIVE_INDEX_DDL = "CREATE INDEX IF NOT EXISTS {name} ON {table} (case_id)"
# SQL: the row's originator id is a stream id as the ledger writes it on SQLite.
STREAM_ID_FORM = (
    "typeof(originator_id) = 'text' AND length(originator_id) = 32 "
    "AND originator_id NOT GLOB '*[^0-9a-f]*'"
)


def stored_bytes(value: Any) -> bytes:
    """A state column's value as bytes, whatever an edit of the database left there
    (NULL, text): `ledger verify` must report such a row, not fail on it."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if value is None:
        return b""
    return str(value).encode("utf-8", "surrogatepass")


def _shown(kind: str, raw: bytes) -> str:
    """A stored value that is not what the ledger wrote, for a finding: SQLite's name
    for its type, then its text where that is printable, else its bytes in hex."""
    if kind == "text":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if text.isprintable():
                return f"text {text!r}"
    return f"{kind} {raw.hex()}".rstrip()


def _originator_text(value: Any) -> str:
    """An originator id column's value as text, whatever an edit left there."""
    if isinstance(value, str):
        return value
    if value is None:
        return _shown("null", b"")
    if isinstance(value, bytes):
        return _shown("blob", value)
    return _shown("integer" if isinstance(value, int) else "real", str(value).encode())


def lenient_text(raw: bytes) -> str:
    """SQLite text as str, invalid UTF-8 kept as escaped bytes rather than an error."""
    return raw.decode("utf-8", "surrogateescape")


@contextmanager
def _text_leniently(conn: sqlite3.Connection) -> Iterator[None]:
    """Meanwhile, `conn` reads text with `lenient_text`."""
    strict = conn.text_factory
    conn.text_factory = lenient_text
    try:
        yield
    finally:
        conn.text_factory = strict


def stored_int(value: Any) -> int:
    """A version or id column's value; -1 where an edit left something else there."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed `--db` value: `sqlite:///PATH` or `postgresql://user@host:port/db?schema=S`."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = "public"
    text: str = ""  # the URL as given, to reopen the same store elsewhere

    @property
    def is_sqlite(self) -> bool:
        return self.scheme == "sqlite"

    def describe(self) -> str:
        if self.is_sqlite:
            return f"SQLite file {self.path}"
        return f"PostgreSQL {self.user}@{self.host}:{self.port}/{self.dbname} schema {self.schema}"


def parse_db_url(url: str) -> DatabaseURL:
    """Parse a database URL, or raise UsageError naming what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UsageError(f"malformed database URL {url!r}: {e}") from None
    if parts.scheme == "sqlite":
        path = unquote(parts.path)
        if not url.startswith("sqlite:///") or parts.netloc or path == "/":
            raise UsageError(
                f"malformed SQLite URL {url!r}: use sqlite:///relative/path or sqlite:////abs/path"
            )
        path = path[1:]
        return DatabaseURL("sqlite", path=path, text=url)
    if parts.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        dbname = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not dbname or "/" in dbname:
            raise UsageError(f"malformed PostgreSQL URL {url!r}: need postgresql://user@host/db")
        schema = parse_qs(parts.query, keep_blank_values=True).get("schema", ["public"])[0]
        if not schema.replace("_", "").isalnum():
            raise UsageError(f"malformed PostgreSQL URL {url!r}: bad schema name {schema!r}")
        return DatabaseURL(
            "postgresql",
            host=parts.hostname,
            port=port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            dbname=dbname,
            schema=schema,
            text=url,
        )
    raise UsageError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


class EnvelopeMapper(Mapper[UUID]):
    """Stores a ledger event's canonical envelope verbatim as the stored state.

    No transcoding, compression or encryption: the stored bytes must be the
    hashed and signed bytes, so that an auditor can check them directly.
    """

    def __init__(self) -> None:
        super().__init__(transcoder=_NoTranscoder())

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=get_topic(type(domain_event)),
            state=domain_event.envelope,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        """The event as its envelope says, not as the row's topic does: the topic is
        not part of the signed record, so an edit to it must not stop the ledger
        reading the stream (`ledger verify` reports it)."""
        originator_id = stored_event.originator_id
        if not isinstance(originator_id, UUID):
            originator_id = UUID(str(originator_id))
        version = stored_event.originator_version
        env = read_stored(stored_event.state, version, originator_id)
        if stream_id(env.stream) != originator_id:
            raise DamagedRecord(
                stored_at(version, originator_id), f"it is an event of {env.stream}"
            )
        cls = event_class(env.stream, version)
        return cls.from_stored(originator_id, version, env.raw)


class _NoTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        raise TypeError("ledger events are stored as their canonical envelope bytes")

    def decode(self, data: bytes) -> Any:
        raise TypeError("ledger events are read as their canonical envelope bytes")


def before_commit(kwargs: dict[str, Any]) -> list[tuple[str, str, str, bytes]]:
    """Run the writer's last check inside the write transaction, before it commits
    (on SQLite, after the events are inserted): it may refuse the batch, rolling it
    back, or return the narrative rows to write with it."""
    check = kwargs.get("before_commit")
    return [] if check is None else list(check())


class IndexedSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite recorder that also writes the event-id index in the same transaction."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {INDEX_TABLE} (event_id TEXT PRIMARY KEY, "
            "stream TEXT NOT NULL, originator_id TEXT NOT NULL, seq INTEGER NOT NULL, "
            "type TEXT NOT NULL, agency TEXT NOT NULL, occurred_at TEXT NOT NULL, "
            "recorded_at TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {INDEX_TABLE}_stream ON {INDEX_TABLE} (stream, seq)",
            NARRATIVE_DDL.format(table=NARRATIVE_TABLE, blob="BLOB"),
            NARRATIVE_INDEX_DDL.format(name=NARRATIVE_TABLE + "_case", table=NARRATIVE_TABLE),
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        # One executemany, not eventsourcing's INSERT per event (which it runs to learn
        # each notification id): this ledger keeps no followers to pass them to, and
        # its notification log reads them back from the table.
        SQLiteAggregateRecorder._insert_events(self, c, stored_events)
        rows = kwargs.get("index_rows")
        if rows:
            c.executemany(f"INSERT INTO {INDEX_TABLE} VALUES (?,?,?,?,?,?,?,?)", rows)
        moved = self._moved_agency(c, kwargs.get("agency_versions"))
        if moved is not None:
            raise StoreIntegrityError(f"agency stream {moved} moved while this batch was written")
        sealed = before_commit(kwargs)
        if sealed:
            # The events above took the write lock: no erasure can commit until this does.
            cases = sorted({row[2] for row in sealed})
            c.execute(
                f"SELECT case_id, erased_at FROM vault_case_keys WHERE case_id IN "
                f"({','.join('?' * len(cases))}) AND erased_at IS NOT NULL",
                cases,
            )
            erased = c.fetchone()
            if erased is not None:
                raise NarrativeErased(str(erased[0]), str(erased[1]))
            c.executemany(
                f"INSERT INTO {NARRATIVE_TABLE} (event_id, field, case_id, sealed) "
                "VALUES (?,?,?,?)",
                sealed,
            )
        return None

    def _moved_agency(self, c: SQLiteCursor, versions: dict[UUID, int] | None) -> UUID | None:
        """A signing agency whose stream is not at the version expected (the one its
        keys were confirmed at, plus any events of this batch), if any. The keys are
        confirmed before this transaction takes SQLite's write lock, and another
        process, whose writer lock is its own, may append to the agency (revoke a key)
        in between; the inserts above now hold SQLite's lock, so what this reads stays
        true until commit. The retry re-reads and confirms again.
        (A PostgreSQL batch holds the agencies' streams locked from before it reads
        them until it commits, so its recorder has no need of this.)"""
        for oid, version in (versions or {}).items():
            c.execute(
                f"SELECT MAX(originator_version) FROM {self.events_table_name} "
                "WHERE originator_id = ?",
                (oid.hex,),
            )
            if c.fetchone()[0] != version:
                return oid
        return None


class Catalog(Protocol):
    """Store-specific read queries the ledger needs beyond eventsourcing's API."""

    events_table: str

    def stream_counts(self) -> tuple[list[tuple[UUID, int]], list[tuple[str, int]]]: ...
    def lookup(self, event_ids: Sequence[str]) -> dict[str, tuple[str, int]]: ...
    def index_rows(self, stream_prefix: str) -> list[tuple[Any, ...]]: ...
    def iter_index(self, upto: int) -> Iterator[tuple[Any, ...]]: ...
    def count_events(self) -> int: ...
    def last_position(self) -> int: ...
    def odd_topics(
        self, first: Sequence[str], later: Sequence[str], upto: int
    ) -> list[tuple[Any, int, Any]]: ...
    def streams_opened_as(self, topics: Sequence[str]) -> list[UUID]: ...
    def heads(self, ids: Sequence[UUID]) -> dict[UUID, int]: ...
    def lock_streams(self, written: Collection[UUID], read: Collection[UUID]) -> None: ...
    def current(self, held: Sequence[tuple[UUID, int]]) -> dict[UUID, tuple[int, bytes | None]]: ...
    def stream_page(self, oid: UUID, after: int, limit: int) -> list[tuple[int, bytes, int]]: ...
    def streams_mentioning(self, text: str) -> list[str]: ...
    def streams_after(self, after: str, prefix: str, limit: int) -> list[str]: ...
    def notifications_after(self, last: int, limit: int) -> list[tuple[int, str, int, bytes]]: ...


class SQLiteCatalog:
    def __init__(self, recorder: IndexedSQLiteRecorder) -> None:
        self.recorder = recorder
        self.events_table: str = recorder.events_table_name

    def _query(
        self, sql: str, params: Sequence[Any] = (), lenient: bool = False
    ) -> list[tuple[Any, ...]]:
        """Rows as plain tuples; with `lenient`, text an edit left as invalid UTF-8
        comes escaped (see `lenient_text`) instead of failing the query."""
        with self.recorder.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples: no sqlite3.Row to build and copy
            with _text_leniently(cursor.connection) if lenient else nullcontext():
                cursor.execute(sql, params)
                rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows

    def stream_counts(self) -> tuple[list[tuple[UUID, int]], list[tuple[str, int]]]:
        """Each stream's id and number of events, in the order the streams began; and
        each originator id that is not a stream id as the ledger writes it (32
        lowercase hex digits, as text), so that no stream reads its rows: an edit's
        doing, shown for a finding with how many rows have it."""
        rows = self._query(
            f"SELECT CASE WHEN {STREAM_ID_FORM} THEN originator_id END, COUNT(*), "
            "typeof(originator_id), CAST(originator_id AS BLOB) "
            f"FROM {self.events_table} GROUP BY originator_id ORDER BY MIN(rowid)"
        )
        streams = [(UUID(r[0]), int(r[1])) for r in rows if r[0] is not None]
        foreign = [(_shown(r[2], r[3] or b""), int(r[1])) for r in rows if r[0] is None]
        return streams, foreign

    def _query_in(self, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """`sql` with `{marks}` for an IN list, run over `values` 500 at a time (SQLite
        limits the number of parameters)."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start : start + 500])
            rows += self._query(sql.format(marks=",".join("?" * len(chunk))), chunk)
        return rows

    def lookup(self, event_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        rows = self._query_in(
            f"SELECT event_id, originator_id, seq FROM {INDEX_TABLE} WHERE event_id IN ({{marks}})",
            event_ids,
        )
        return {r[0]: (r[1], int(r[2])) for r in rows}

    def index_rows(self, stream_prefix: str) -> list[tuple[Any, ...]]:
        return self._query(
            f"SELECT {INDEX_COLUMNS} FROM {INDEX_TABLE} WHERE stream LIKE ? ORDER BY stream, seq",
            [stream_prefix + "%"],
        )

    def iter_index(self, upto: int) -> Iterator[tuple[Any, ...]]:
        """Every event-index row, in bytewise event id order, streamed (for verify),
        but those of events stored after position `upto`. Read in one snapshot, with
        text an edit left as invalid UTF-8 escaped, so verify reports it rather than
        failing on it; the order ignores any collation the table was rebuilt with."""
        sql = (
            f"SELECT {INDEX_COLUMNS} FROM {INDEX_TABLE} x WHERE {self.not_later('x', upto)} "
            "ORDER BY event_id COLLATE BINARY"
        )
        with self.recorder.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples, as _query's
            with _text_leniently(cursor.connection):
                cursor.execute(sql)
                while rows := cursor.fetchmany(5000):
                    yield from rows

    def not_later(self, alias: str, upto: int, schema: str = "") -> str:
        """SQL: the index row `alias` is not that of an event stored after `upto` (a
        verify started before it was written reads neither)."""
        return (
            f"NOT EXISTS (SELECT 1 FROM {schema}{self.events_table} e WHERE e.rowid > "
            f"{int(upto)} AND e.originator_id = {alias}.originator_id AND "
            f"e.originator_version = {alias}.seq)"
        )

    def count_events(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {self.events_table}")[0][0])

    def file_path(self) -> str:
        """The file this store has open, as an absolute path: the URL's may be relative
        to a working directory the process has since left."""
        return next(str(r[2]) for r in self._query("PRAGMA database_list") if r[1] == "main")

    def text_encoding(self) -> str:
        """The file's text encoding (a database attaches only to one of its own)."""
        return str(self._query("PRAGMA encoding")[0][0])

    def last_position(self) -> int:
        """The newest event's position in commit order (0 for none)."""
        return int(self._query(f"SELECT COALESCE(MAX(rowid), 0) FROM {self.events_table}")[0][0])

    def streams_opened_as(self, topics: Sequence[str]) -> list[UUID]:
        """The streams whose first event has one of `topics`; rows under an originator id
        that is no stream id as the ledger writes it are left out (`stream_counts`
        reports them)."""
        rows = self._query(
            f"SELECT originator_id FROM {self.events_table} WHERE originator_version = 1 "
            f"AND {STREAM_ID_FORM} AND topic IN ({', '.join('?' * len(topics))})",
            tuple(topics),
        )
        return [UUID(hex=str(r[0])) for r in rows]

    def odd_topics(
        self, first: Sequence[str], later: Sequence[str], upto: int
    ) -> list[tuple[Any, int, Any]]:
        """(originator, version, topic) of the events up to `upto` whose topic is none of
        `first` (for a stream's first event) or `later` (for the others): one scan."""
        return self._query(
            f"SELECT originator_id, originator_version, topic FROM {self.events_table} "
            f"WHERE rowid <= ? AND NOT ((originator_version = 1 AND topic IN "
            f"({', '.join('?' * len(first))})) OR (originator_version > 1 AND topic IN "
            f"({', '.join('?' * len(later))})))",
            (upto, *first, *later),
            lenient=True,
        )

    def notifications_after(self, last: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        """The notification log's next rows (id, originator hex, version, state), read raw
        for the integrator: the same rows, in the same order, as select_notifications."""
        sql = (
            f"SELECT rowid, originator_id, originator_version, state FROM {self.events_table} "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?"
        )
        try:
            rows = self._query(sql, [last, limit])
        except OperationalError:  # text an edit left as invalid UTF-8: read it escaped
            rows = self._query(sql, [last, limit], lenient=True)
        # Nearly every page is already so (rowid is always an integer): one pass over
        # the column types passes it without rebuilding a tuple for every row.
        if all(type(r[1]) is str and type(r[2]) is int and type(r[3]) is bytes for r in rows):
            return rows
        return [
            (int(r[0]), _originator_text(r[1]), stored_int(r[2]), stored_bytes(r[3])) for r in rows
        ]

    def streams_mentioning(self, text: str) -> list[str]:
        """Case streams whose stored events contain `text` (a reference), by name."""
        rows = self._query(
            f"SELECT DISTINCT i.stream FROM {self.events_table} e JOIN {INDEX_TABLE} i "
            "ON i.originator_id = e.originator_id AND i.seq = e.originator_version "
            "WHERE instr(e.state, ?) > 0 AND i.stream LIKE 'case/%'",
            [text.encode()],
        )
        return [str(r[0]) for r in rows]

    def streams_after(self, after: str, prefix: str, limit: int) -> list[str]:
        rows = self._query(
            f"SELECT DISTINCT stream FROM {INDEX_TABLE} WHERE stream > ? AND stream LIKE ? "
            "ORDER BY stream LIMIT ?",
            [after, prefix + "%", limit],
        )
        return [str(r[0]) for r in rows]

    def _per_stream(
        self, select: str, rows: Sequence[tuple[Any, ...]], columns: str = "id"
    ) -> list[tuple[Any, ...]]:
        """`select` run once per stream (`ids.id`, and any further `columns` of `rows`),
        500 parameters to a query: each looks up its stream's newest row in the
        primary key's index, where a GROUP BY over an IN list would read every event
        of every stream, and long cases would make each append slower."""
        width = columns.count(",") + 1
        marks = "(" + ",".join("?" * width) + ")"
        step = 500 // width
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            values = ",".join([marks] * len(chunk))
            params = [x for row in chunk for x in row]
            found += self._query(f"WITH ids({columns}) AS (VALUES {values}) {select}", params)
        return found

    def heads(self, ids: Sequence[UUID]) -> dict[UUID, int]:
        rows = self._per_stream(
            f"SELECT id, (SELECT MAX(originator_version) FROM {self.events_table} "
            "WHERE originator_id = ids.id) FROM ids",
            [(i.hex,) for i in ids],
        )
        return {UUID(r[0]): int(r[1]) for r in rows if r[1] is not None}

    def stream_page(self, oid: UUID, after: int, limit: int) -> list[tuple[int, bytes, int]]:
        """(version, stored bytes, notification id) of a stream's events after `after`:
        what `ledger verify` reads, without building a StoredEvent and a UUID for
        every row."""
        rows = self._query(
            f"SELECT originator_version, state, rowid FROM {self.events_table} "
            "WHERE originator_id = ? AND originator_version > ? "
            "ORDER BY originator_version LIMIT ?",
            (oid.hex, after, limit),
        )
        if all(type(r[0]) is int and type(r[1]) is bytes for r in rows):
            return rows  # as written; else as an edit left them, for verify to report
        return [(stored_int(r[0]), stored_bytes(r[1]), int(r[2])) for r in rows]

    def lock_streams(self, written: Collection[UUID], read: Collection[UUID]) -> None:
        """Nothing to take: SQLite admits one writing transaction at a time, and an
        agency that moved meanwhile is caught before the commit (`_moved_agency`)."""

    def current(self, held: Sequence[tuple[UUID, int]]) -> dict[UUID, tuple[int, bytes | None]]:
        """Each stream's latest version, with its newest stored bytes unless that is
        the version already held: one query per 250 streams."""
        t = self.events_table
        rows = self._per_stream(
            "SELECT e.originator_id, e.originator_version, CASE WHEN e.originator_version "
            f"= ids.v THEN NULL ELSE e.state END FROM ids JOIN {t} e ON e.originator_id = "
            f"ids.id AND e.originator_version = (SELECT MAX(originator_version) FROM {t} "
            "WHERE originator_id = ids.id)",
            [(oid.hex, version) for oid, version in held],
            "id, v",
        )
        return {UUID(r[0]): (int(r[1]), None if r[2] is None else bytes(r[2])) for r in rows}


class LedgerApplication(Application[UUID]):
    """The eventsourcing Application holding case, agency and ledger streams."""

    name = "Ledger"

    def construct_mapper(self) -> Mapper[UUID]:
        return EnvelopeMapper()


@dataclass
class Store:
    """An open ledger database: the application plus its catalog queries."""

    url: DatabaseURL
    app: LedgerApplication
    catalog: Catalog
    writer_lock: WriterLock | None = field(default=None)

    def writer(self) -> AbstractContextManager[object]:
        """Held by a process while it reads stream heads and writes after them.

        Processes writing to the same database (the API's workers) would otherwise
        both read a case's head, both write after it, and one would redo its whole
        batch on the unique-version conflict; with PostgreSQL the write transaction
        locks the batch's streams before it reads them (`Catalog.lock_streams`), so
        batches sharing a case take turns and others go on side by side. SQLite
        already admits one writer at a time.
        """
        return nullcontext() if self.writer_lock is None else self.writer_lock

    def close(self) -> None:
        if self.writer_lock is not None:
            self.writer_lock.close()
        self.app.close()


class WriterLock(Protocol):
    def __enter__(self) -> object: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...


def open_store(url: str, create: bool = True) -> Store:
    """Open the database named by `url`, creating tables if needed.

    With `create=False` a SQLite file, or a PostgreSQL schema without the ledger's
    tables, is an error rather than a new empty ledger, so a mistyped name is noticed.
    """
    parsed = parse_db_url(url)
    if parsed.is_sqlite:
        if not create and not Path(parsed.path).exists():
            raise NotFound(f"no ledger database at {parsed.path}: run 'ledger init' first")
        return _open_sqlite(parsed)
    from .pgstore import open_postgres  # psycopg is the `postgres` extra

    return open_postgres(parsed, create)


def _open_sqlite(url: DatabaseURL) -> Store:
    path = Path(url.path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sqlite3.connect(path).close()
        app = LedgerApplication(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": "30",
                "APPLICATION_RECORDER_TOPIC": get_topic(IndexedSQLiteRecorder),
                "AGGREGATE_CACHE_MAXSIZE": "20000",
                "CREATE_TABLE": "y",
            }
        )
    except (sqlite3.Error, PersistenceError, OSError) as e:
        raise StoreUnavailable(f"cannot open SQLite database {path}: {e}") from None
    recorder = app.recorder
    assert isinstance(recorder, IndexedSQLiteRecorder)
    return Store(url, app, SQLiteCatalog(recorder))


def default_db_url() -> str:
    return os.environ.get("LEDGER_DB") or DEFAULT_DB
