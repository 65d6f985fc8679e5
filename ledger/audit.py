"""`ledger verify`: check every stored event of a ledger database, from the stored bytes.

Two passes over the eventsourcing store. First the registry streams (the ledger
root and each agency's keys), verified against the pinned ledger key, build the
key history. Then every stream is read in seq order a page at a time: hashes are
recomputed from the stored bytes, chains and seq continuity checked, each
signature checked against the key valid at the event's `recorded_at` and at its
place in commit order (on all cores: Ed25519 verification releases the GIL), and
event ids collected in a temporary on-disk table to find reuse and to hold the
event index (which listings read) to the events. Memory stays flat in the number
of events.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.utils import get_topic

from .case import STREAM_KINDS, Agency, LedgerRoot
from .log import VerifiableLog, log_verifier
from .logaudit import Anchor, LogAuditor, audit_log_elsewhere
from .store import INDEX_COLUMNS, INDEX_TABLE, SQLiteCatalog, Store, lenient_text
from .verify import (
    LEDGER_STREAM,
    ChainState,
    Envelope,
    FormatError,
    KeyRegistry,
    b64encode,
    key_id_of,
    parse_envelope,
    signature_ok,
    stream_id,
    verify_raw_chunk,
)

PAGE = 1000
INDEX_FIELDS = ("event_id", "stream", "originator_id", "seq", "type", "agency", "occurred_at",
                "recorded_at")  # fmt: skip
# The same fields as the temporary table of events seen holds them.
ID_FIELDS = ("event_id", "stream", "originator", "seq", "type", "agency", "occurred_at",
             "recorded_at")  # fmt: skip
ID_COLUMNS = "event_id, stream, seq, k0, k1, originator, type, agency, occurred_at, recorded_at"
# The topics the ledger writes: each stream kind's opening event, then its others.
FIRST_TOPICS = [get_topic(kind.Opened) for kind in STREAM_KINDS]
LATER_TOPICS = [get_topic(kind.Recorded) for kind in STREAM_KINDS]
INDEXED = f"ledger.{INDEX_TABLE}"  # the ledger's event index, attached to the ids file
# Where an event's index row (x) may disagree with the event (f): a superset of the
# exact comparison's findings, however the table was rebuilt.
DIFFERS = " OR ".join(
    f"x.{have} IS NOT f.{want} COLLATE BINARY OR typeof(x.{have}) IS NOT typeof(f.{want})"
    for want, have in zip(ID_FIELDS, INDEX_FIELDS, strict=True)
)
# Events seen (f) whose index row (x) may disagree with them.
JOIN = (
    f"SELECT f.event_id FROM ids f LEFT JOIN {INDEXED} x ON x.event_id = f.event_id "
    f"COLLATE BINARY WHERE ({DIFFERS})"
)


def _read_only_uri(path: str) -> str:
    """A URI for an absolute path, whatever characters it holds (a path starting
    with // would otherwise name a host)."""
    return f"file://{quote(os.path.abspath(path))}?mode=ro"


SIG_CHUNK = 1024
MAX_KEPT_PROBLEMS = 1000

# Where an event awaiting its signature result is (order, stream, seq, event id) and
# whose key it needs: a plain tuple, as a Problem is made only for the few that fail.
_Pending = tuple[tuple[int, int, int], str, int, str, str]


@dataclass(frozen=True)
class Problem:
    """One thing wrong, located as precisely as the stored data allows."""

    order: tuple[int, int, int]
    stream: str
    seq: int
    event_id: str | None
    message: str

    def describe(self) -> str:
        if self.stream == "log":
            return f"log: {self.message}"
        where = self.stream.replace("/", " ", 1)
        ident = f" (event {self.event_id})" if self.event_id else ""
        return f"{where} seq {self.seq}{ident}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        case_id = self.stream.removeprefix("case/") if self.stream.startswith("case/") else None
        return {
            "stream": self.stream,
            "case_id": case_id,
            "seq": self.seq,
            "event_id": self.event_id,
            "problem": self.message,
        }


@dataclass
class AuditReport:
    events: int = 0
    streams: int = 0
    cases: int = 0
    agencies: int = 0
    signatures: int = 0
    leaves: int = 0
    checkpoints: int = 0
    anchors: int = 0  # checkpoints held outside the database that verified as the log's
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_KEPT_PROBLEMS:
            self.problems.append(problem)

    def sort(self) -> None:
        """Ledger order: registry first, streams by creation, then seq (stable within one)."""
        self.problems.sort(key=lambda p: p.order)

    def as_dict(self) -> dict[str, Any]:
        self.sort()
        return {
            "ok": self.ok,
            "events": self.events,
            "streams": self.streams,
            "cases": self.cases,
            "agencies": self.agencies,
            "signatures_checked": self.signatures,
            "log_leaves": self.leaves,
            "checkpoints": self.checkpoints,
            "checkpoints_held_outside": self.anchors,
            "problem_count": self.problem_count,
            "first_problem": self.problems[0].as_dict() if self.problems else None,
            "problems": [p.as_dict() for p in self.problems],
        }


class _EventIds:
    """Event ids seen, with the event-index row each event should have, kept in a
    temporary SQLite file so memory does not grow.

    For a SQLite ledger (`ledger_path`), the ledger is attached read-only and each
    flushed page of rows is joined with the event index there and then, inside
    SQLite, while the signature workers are busy: the join is several times quicker
    than reading both tables into Python. It only picks out the ids whose index row
    and event may disagree (any change of storage class counts, and text compares
    bytewise whatever collation the table was rebuilt with), and `odd_ones` hands
    just those to the exact comparison, so the findings and their words are the
    same as reading every row.
    """

    def __init__(self, ledger_path: str | None = None, encoding: str = "UTF-8") -> None:
        fd, name = tempfile.mkstemp(prefix="ledger-verify-", suffix=".sqlite")
        os.close(fd)
        self.path = Path(name)
        self.db = sqlite3.connect(f"file:{quote(name)}", uri=True)
        # Removed when closed, or else when dropped (an Auditor made but never run).
        self._finalizer = weakref.finalize(self, _remove, self.db, self.path)
        # Text an edit left as invalid UTF-8 is compared (and reported), not a crash.
        self.db.text_factory = lenient_text
        try:
            self._open(ledger_path, encoding)
        except BaseException:
            self.close()
            raise

    def _open(self, ledger_path: str | None, encoding: str) -> None:
        # The ledger's text encoding (as SQLite names it: UTF-8, UTF-16le or UTF-16be):
        # a database attaches only to one of its own.
        self.db.execute(f"PRAGMA encoding = '{encoding}'")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute(
            "CREATE TABLE ids (event_id TEXT, stream TEXT, seq INTEGER, k0 INTEGER, k1 INTEGER, "
            "originator TEXT, type TEXT, agency TEXT, occurred_at TEXT, recorded_at TEXT)"
        )
        self.rows: list[tuple[Any, ...]] = []
        self.compared = 0  # rows of `ids` already joined with the index
        self.attached = self.join_each_flush = False
        if ledger_path is None:
            return
        try:
            self.db.execute("ATTACH DATABASE ? AS ledger", (_read_only_uri(ledger_path),))
            plan = self.db.execute(f"EXPLAIN QUERY PLAN {JOIN}").fetchall()
        except sqlite3.Error:
            return  # the index is then read into Python, as for PostgreSQL
        self.db.execute("CREATE TABLE odd (event_id TEXT PRIMARY KEY) WITHOUT ROWID")
        self.attached = True
        # Page by page only where each lookup uses the index's own key: on a table
        # rebuilt without it, SQLite would index the whole table again for every
        # page, so the join runs once, at the end.
        self.join_each_flush = any(
            "SEARCH x USING" in str(row[-1]) and "AUTOMATIC" not in str(row[-1]) for row in plan
        )

    def add(
        self, env: Envelope, stream: str, originator: str, seq: int, order: tuple[int, int, int]
    ) -> None:
        body = env.body  # parsed: these fields are known to be strings
        self.rows.append(
            (body["event_id"], stream, seq, order[0], order[1], originator, body["type"],
             body["agency"], body["occurred_at"], env.recorded_at)
        )  # fmt: skip
        if len(self.rows) >= 5000:
            self.flush()

    def flush(self) -> None:
        db = self.db
        db.executemany("INSERT INTO ids VALUES (?,?,?,?,?,?,?,?,?,?)", self.rows)
        added, self.rows = len(self.rows), []
        if self.join_each_flush and added:
            self._join()
        db.commit()  # and lets go of the ledger, whose log may then be checkpointed

    def _join(self) -> None:
        """Join the rows added since the last join with the index."""
        self.db.execute(f"INSERT OR IGNORE INTO odd {JOIN} AND f.rowid > ?", (self.compared,))
        self.compared = self.db.execute("SELECT COALESCE(MAX(rowid), 0) FROM ids").fetchone()[0]

    def in_id_order(self) -> Iterator[tuple[Any, ...]]:
        """Every event seen, by event id and then where it was found: one sort, read
        once for both reuse and the event index."""
        self.flush()
        yield from self.db.execute(f"SELECT {ID_COLUMNS} FROM ids ORDER BY event_id, k0, k1, seq")

    def odd_ones(
        self, not_later: str
    ) -> tuple[Iterator[tuple[Any, ...]], Iterator[tuple[Any, ...]]]:
        """With the ledger attached: only the events, and the event-index rows, whose
        ids are used twice, or whose row and event may disagree, in the order
        `in_id_order` and `iter_index` give them. An index row no event seen has is
        left out where `not_later` (SQL on the row `x`) says its event was stored
        after verify began."""
        self.flush()
        db = self.db
        self._join()  # what no flush has joined yet: all of it, without the index's key
        db.execute("CREATE INDEX ids_event ON ids (event_id, k0, k1, seq)")
        db.execute(
            "INSERT OR IGNORE INTO odd SELECT event_id FROM ids GROUP BY event_id "
            "HAVING COUNT(*) > 1"
        )
        # A table rebuilt without its key can hold one event id twice.
        db.execute(
            f"INSERT OR IGNORE INTO odd SELECT CAST(event_id AS TEXT) FROM {INDEXED} "
            "GROUP BY event_id COLLATE BINARY HAVING COUNT(*) > 1"
        )
        db.commit()  # no write transaction (and ledger snapshot) held past the merge
        events = db.execute(
            f"SELECT {ID_COLUMNS} FROM ids WHERE event_id IN odd ORDER BY event_id, k0, k1, seq"
        )
        rows = db.cursor().execute(
            f"SELECT {INDEX_COLUMNS} FROM {INDEXED} x WHERE x.event_id COLLATE BINARY IN odd "
            "OR typeof(x.event_id) IS NOT 'text' OR (NOT EXISTS (SELECT 1 FROM ids "
            f"WHERE ids.event_id = x.event_id COLLATE BINARY) AND {not_later}) "
            "ORDER BY x.event_id COLLATE BINARY"
        )
        return events, rows

    def close(self) -> None:
        self._finalizer()


def _remove(db: sqlite3.Connection, path: Path) -> None:
    db.close()
    path.unlink(missing_ok=True)


class Auditor:
    """One verification run over one store."""

    def __init__(
        self,
        store: Store,
        ledger_public_key: bytes,
        progress: Callable[[int], None] | None = None,
        workers: int | None = None,
        processes: bool = False,
        index_in_database: bool = True,
        anchors: Sequence[Anchor] = (),
    ) -> None:
        self.store = store
        self.anchors = list(anchors)
        # A SQLite ledger's event index is compared inside SQLite where it can be
        # attached (the same findings as reading it all into Python, which
        # PostgreSQL ledgers do). First: nothing else to clean up if this fails.
        catalog = store.catalog
        self.ids = (
            _EventIds(catalog.file_path(), catalog.text_encoding())
            if index_in_database and isinstance(catalog, SQLiteCatalog)
            else _EventIds()
        )
        self.registry = KeyRegistry(
            key_id_of(ledger_public_key), Ed25519PublicKey.from_public_bytes(ledger_public_key)
        )
        self.ledger_public_b64 = b64encode(ledger_public_key)
        self.report = AuditReport()
        self.progress = progress or (lambda n: None)
        cores = workers or os.cpu_count() or 2
        # Ed25519 verification releases the GIL, but the reading thread holds it
        # most of the time, so large ledgers verify in worker processes instead.
        self.pool: Executor = (
            ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
            if processes
            else ThreadPoolExecutor(cores)
        )
        self.slots = cores
        self.processes = processes
        self.in_flight: deque[tuple[Future[list[bool]], list[_Pending]]] = deque()
        self.batch: list[tuple[bytes, bytes, bytes]] = []
        self.batch_ctx: list[_Pending] = []
        self.raw_keys: dict[int, bytes] = {}
        self.origin: str | None = None
        self.names: dict[str, str] = {}  # originator id hex -> stream name
        self.ledger_public_key = ledger_public_key
        self.originator = ""  # the stream being read, as the event index names it
        self.upto = 0  # the last position in commit order that this run reads

    @property
    def index_in_database(self) -> bool:
        """Whether the event index is compared inside SQLite (the ledger attached)."""
        return self.ids.attached

    def run(self) -> AuditReport:
        try:
            # What was stored when verify began: events appended meanwhile (the ledger
            # may be serving) are left to the next run, with their index rows.
            self.upto = self.store.catalog.last_position()
            counts, foreign = self.store.catalog.stream_counts()
            for shown, rows in foreign:
                self._problem(
                    (1, len(counts), 0),
                    f"originator {shown}",
                    0,
                    None,
                    f"{rows} stored event(s) under an originator id that is no stream's, "
                    "so no stream holds them: written outside the ledger",
                )
            registry_ids = self._registry_stream_ids()
            registry_done: set[UUID] = set()
            order = {oid: n for n, (oid, _) in enumerate(counts)}
            root = stream_id(LEDGER_STREAM)
            if root not in order:
                self._problem(
                    (0, 0, 0),
                    LEDGER_STREAM,
                    1,
                    None,
                    "the ledger has no genesis event (LEDGER_INITIALISED)",
                )
            for oid in sorted(registry_ids, key=lambda o: (o != root, order.get(o, 0))):
                if oid in order:
                    self._verify_stream(oid, (0, order[oid]), registry=True)
                    registry_done.add(oid)
            self.report.agencies = len(self.registry.agencies)
            # With worker processes, the Merkle pass runs in one of its own, in
            # parallel with the per-stream pass below.
            log_job = None
            if self.processes and self.origin is not None:
                log_pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
                log_job = log_pool.submit(
                    audit_log_elsewhere,
                    self.store.url.text,
                    self.origin,
                    self.ledger_public_key,
                    self.anchors,
                )
            for oid, _ in counts:
                if oid not in registry_done:
                    self._verify_stream(oid, (1, order[oid]), registry=False)
            # The index and the topics are checked while the workers finish the last
            # signatures.
            self._hand_over()
            self._check_topics(order)
            catalog = self.store.catalog
            if isinstance(catalog, SQLiteCatalog) and self.ids.attached:
                events, index_rows = self.ids.odd_ones(
                    catalog.not_later("x", self.upto, schema="ledger.")
                )
            else:
                events, index_rows = self.ids.in_id_order(), catalog.iter_index(self.upto)
            self._check_index(self._first_uses(events), index_rows)
            self._drain(0)
            self.report.streams = len(counts)
            if log_job is not None:
                leaves, checkpoints, anchors, problems = log_job.result()
                log_pool.shutdown()
                self.report.leaves, self.report.checkpoints = leaves, checkpoints
                self.report.anchors = anchors
                for problem in problems:
                    self._log_problem(*problem)
            elif self.origin is not None:
                self._verify_log(self.origin)
            self.report.sort()
            return self.report
        finally:
            self.pool.shutdown(wait=True)
            self.ids.close()

    def _check_topics(self, order: dict[UUID, int]) -> None:
        """A row's topic is eventsourcing's class name for its event, not part of the
        signed record, and the ledger reads events by their envelopes alone; an edit
        to it is an edit to the stored event all the same, and is named."""
        for originator, version, topic in self.store.catalog.odd_topics(
            FIRST_TOPICS, LATER_TOPICS, self.upto
        ):
            try:
                oid = originator if isinstance(originator, UUID) else UUID(str(originator))
            except ValueError:
                continue  # under no stream's id: reported as such already
            stream = self.names.get(oid.hex) or f"stream {oid}"
            event_id = None
            with contextlib.suppress(FormatError, IndexError, TypeError):
                rows = self.store.catalog.stream_page(oid, version - 1, 1)
                event_id = parse_envelope(rows[0][1]).event_id
            self._problem(
                (1, order.get(oid, 0), version),
                stream,
                version,
                event_id,
                f"stored topic {str(topic)[:80]!r} is not one the ledger writes for this event "
                "(the row was edited)",
            )

    def _first_uses(self, events: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """The index row each event id's first use should have, in event id order;
        each later use of the id is reported as reuse on the way."""
        first: tuple[str, str] | None = None
        for event_id, stream, seq, k0, k1, *indexed in events:
            if first is not None and first[0] == event_id:
                self._problem(
                    (k0, k1, seq),
                    stream,
                    seq,
                    event_id,
                    f"event id {event_id} was already used by {first[1]}",
                )
                continue
            first = (event_id, f"{stream} seq {seq}")
            yield (event_id, stream, indexed[0], seq, *indexed[1:])

    def _check_index(
        self, expected: Iterator[tuple[Any, ...]], index_rows: Iterator[tuple[Any, ...]]
    ) -> None:
        """The event index (`cases`, the sweep and lookups read it) must say exactly
        what the stored events say: a row planted, dropped or edited there would
        change what is listed without touching a hashed byte. Both in bytewise event
        id order."""

        def text_ids() -> Iterator[tuple[Any, ...]]:
            for r in index_rows:
                if isinstance(r[0], str):
                    yield r
                else:  # lookups by the id no longer find it: never the event's row
                    self._index_problem(
                        (str(r[0]), *r[1:]),
                        f"the event index holds event id {r[0]!r} as {type(r[0]).__name__}, "
                        "not text: no stored event has it",
                    )

        actual = text_ids()
        want, have = next(expected, None), next(actual, None)
        while want is not None or have is not None:
            if have is None or (want is not None and want[0] < have[0]):
                assert want is not None
                self._index_problem(want, f"event {want[0]} is missing from the event index")
                want = next(expected, None)
            elif want is None or have[0] < want[0]:
                self._index_problem(
                    have, f"the event index names event {have[0]!r}, which no stored event has"
                )
                have = next(actual, None)
            else:
                if have != want:
                    wrong = [
                        f"{f}: index {b!r}, stored event {a!r}"
                        for f, a, b in zip(INDEX_FIELDS, want, have, strict=True)
                        if a != b
                    ]
                    self._index_problem(
                        want,
                        f"the event index and the stored event {want[0]} disagree on "
                        + "; ".join(wrong),
                    )
                want, have = next(expected, None), next(actual, None)

    def _index_problem(self, row: tuple[Any, ...], message: str) -> None:
        stream = str(row[1]) if row[1] is not None else "index"
        seq = row[3] if isinstance(row[3], int) else 0
        self._problem((3, 0, seq), stream, seq, str(row[0]), message)

    def _registry_stream_ids(self) -> set[UUID]:
        """The streams whose first event is the ledger's or an agency's registry event,
        by their rows' topics (an edit to which is named by `_check_topics`)."""
        topics = [get_topic(Agency.Opened), get_topic(LedgerRoot.Opened)]
        return set(self.store.catalog.streams_opened_as(topics))

    def _problem(
        self, order: tuple[int, int, int], stream: str, seq: int, event_id: str | None, message: str
    ) -> None:
        self.report.add(Problem(order, stream, seq, event_id, message))

    def _verify_stream(self, oid: UUID, order: tuple[int, int], registry: bool) -> None:
        chain: ChainState | None = None
        unnamed: list[tuple[tuple[int, int, int], int, str]] = []  # before the stream is known
        after = 0
        while True:
            rows = self.store.catalog.stream_page(oid, after, PAGE)
            for row in rows:
                version, state, position = row
                if position > self.upto:
                    continue  # stored after verify began
                key = (order[0], order[1], version)
                self.report.events += 1
                try:
                    env = parse_envelope(state)
                except (FormatError, KeyError, ValueError, TypeError, RecursionError) as e:
                    message = f"stored bytes are not a valid event: {e}"
                    if chain is None:
                        unnamed.append((key, version, message))
                    else:
                        self._problem(key, chain.stream, version, None, message)
                        chain.seq, chain.head = version, None
                    continue
                if chain is None:
                    # Usually the first event names its own stream; only when it does not
                    # (it was edited) are the others asked.
                    name = env.stream
                    if stream_id(name) != oid:
                        name = self._stream_name(oid, rows) or name
                    chain = ChainState(name)
                    self.originator = stream_id(name).hex  # as the event index holds it
                    self.names[oid.hex] = name
                    for k, v, message in unnamed:
                        self._problem(k, name, v, None, message)
                    if stream_id(name) != oid:
                        self._problem(
                            key,
                            name,
                            env.seq,
                            env.event_id,
                            f"stored under stream id {oid}, which is not {name}'s",
                        )
                    if name.startswith("case/"):
                        self.report.cases += 1
                self._check_event(env, chain, version, key, registry, position)
            self.progress(len(rows))
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        if chain is None:
            for k, v, message in unnamed:
                self._problem(k, f"stream {oid}", v, None, message)

    def _verify_log(self, origin: str) -> None:
        log = VerifiableLog(self.store)
        try:
            auditor = LogAuditor(
                self.store,
                log,
                log_verifier(origin, self.ledger_public_key),
                lambda oid: self.names.get(oid) or f"stream {oid}",
                self._log_problem,
                self.anchors,
            )
            auditor.run()
            self.report.leaves, self.report.checkpoints = auditor.leaves, auditor.checkpoints
            self.report.anchors = auditor.anchors_checked
        finally:
            log.close()

    def _log_problem(
        self, order: int, stream: str, seq: int, event_id: str | None, message: str
    ) -> None:
        self._problem((2, 0, order), stream, seq, event_id, message)

    @staticmethod
    def _stream_name(oid: UUID, rows: Sequence[Any]) -> str | None:
        """The stream's name from any of its events whose body agrees with where it is
        stored, so an edited first event is reported under the stream it was in."""
        for row in rows:
            try:
                name = parse_envelope(row[1]).stream
            except (FormatError, KeyError, ValueError, TypeError, RecursionError):
                continue
            if stream_id(name) == oid:
                return name
        return None

    def _check_event(
        self,
        env: Envelope,
        chain: ChainState,
        version: int,
        key: tuple[int, int, int],
        registry: bool,
        position: int,
    ) -> None:
        event_id = env.event_id
        for message in chain.check(env, version):
            self._problem(key, chain.stream, version, event_id, message)
        stream = env.stream
        if (stream == LEDGER_STREAM or stream.startswith("agency/")) != registry:
            self._problem(
                key,
                chain.stream,
                version,
                event_id,
                "registry event stored outside the registry (topic altered?)",
            )
            return
        self.ids.add(env, chain.stream, self.originator, version, key)
        public_key, why = self.registry.key_for(env, position)
        if public_key is None:
            self._problem(key, chain.stream, version, env.event_id, str(why))
            return
        if registry:
            # Registry events change which keys are valid, so they are checked
            # synchronously before being folded into the registry.
            self.report.signatures += 1
            if not signature_ok(public_key, env.sig, env.body_bytes):
                self._problem(
                    key,
                    chain.stream,
                    version,
                    env.event_id,
                    "ledger signature does not verify: the event was altered or forged",
                )
                return
            if (
                env.type == "LEDGER_INITIALISED"
                and env.body["payload"].get("public_key") != self.ledger_public_b64
            ):
                self._problem(
                    key,
                    chain.stream,
                    version,
                    env.event_id,
                    "genesis names a different ledger key than the one pinned",
                )
            if env.type == "LEDGER_INITIALISED":
                self.origin = str(env.body["payload"].get("origin"))
            try:
                self.registry.apply(env, position)
            except (KeyError, ValueError, TypeError) as e:
                self._problem(
                    key, chain.stream, version, env.event_id, f"bad registry payload: {e}"
                )
            return
        raw = self.raw_keys.get(id(public_key))
        if raw is None:
            raw = self.raw_keys[id(public_key)] = public_key.public_bytes_raw()
        self.batch.append((raw, env.sig, env.body_bytes))
        self.batch_ctx.append((key, chain.stream, version, event_id, env.agency))
        if len(self.batch) >= SIG_CHUNK:
            self._submit()

    def _submit(self) -> None:
        self._hand_over()
        self._drain(2 * self.slots)

    def _hand_over(self) -> None:
        """Send the signatures gathered so far to the workers, without waiting."""
        if self.batch:
            future = self.pool.submit(verify_raw_chunk, self.batch)
            self.in_flight.append((future, self.batch_ctx))
            self.batch, self.batch_ctx = [], []

    def _drain(self, keep: int) -> None:
        if keep == 0:
            self._hand_over()
        while len(self.in_flight) > keep:
            future, contexts = self.in_flight.popleft()
            results = future.result()
            self.report.signatures += len(results)
            for ok, (order, stream, seq, event_id, agency) in zip(results, contexts, strict=True):
                if not ok:
                    self._problem(
                        order,
                        stream,
                        seq,
                        event_id,
                        f"signature does not verify with {agency}'s key: "
                        "the body was altered, or it was signed by someone else",
                    )


PROCESS_POOL_FROM = 20_000


def audit(
    store: Store,
    ledger_public_key: bytes,
    progress: Callable[[int], None] | None = None,
    processes: bool | None = None,
    anchors: Sequence[Anchor] = (),
) -> AuditReport:
    """Verify everything; signatures on all cores (worker processes for large ledgers).
    `anchors` are signed checkpoints kept outside the database: the log must still
    agree with each, which whoever holds the database and the log key cannot fake."""
    if processes is None:
        processes = store.catalog.count_events() >= PROCESS_POOL_FROM
    return Auditor(store, ledger_public_key, progress, processes=processes, anchors=anchors).run()
