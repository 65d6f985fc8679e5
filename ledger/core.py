"""The append path: validate, sign-check, chain and save events, many at a time.

Every write goes through `Ledger.append_many`, which saves a whole batch (across
cases) in one transaction, so a batch is all-or-nothing and a crash leaves no
partial event. Idempotency is by `event_id`: resubmitting the same body returns
the original receipt; a different body under a used id is a conflict. Two
writers on one case race on the stream version; the loser re-reads and retries,
so a case never forks.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import OriginatorIDError, OriginatorVersionError
from eventsourcing.persistence import IntegrityError as StoreIntegrityError
from eventsourcing.persistence import PersistenceError

from .canonical import canonical, envelope_bytes, format_recorded_at, sha256_hex
from .case import Agency, LedgerRoot, LedgerStream, read_stored, stream_class
from .checkpoint import NoteVerifier
from .errors import (
    Conflict,
    DamagedRecord,
    LedgerError,
    NarrativeErased,
    NotFound,
    SignatureError,
    StoreUnavailable,
    UsageError,
    ValidationError,
)
from .events import AGENCY_ID_RE, AgencyKind, format_time, validate_body
from .keys import (
    LEDGER_KEY_FILE,
    Signer,
    install_key_file,
    load_key_file,
    load_or_generate_key_file,
)
from .log import VerifiableLog, log_verifier
from .narrative import NarrativeText, sign_draft
from .narrative import check as check_narrative
from .sigchecks import SignatureChecks, VerifiedSignatures
from .store import Store, open_store
from .tokens import TokenStore
from .vault import Vault
from .verify import (
    GENESIS_TYPE,
    LEDGER_AGENCY,
    LEDGER_STREAM,
    REGISTRY_TYPES,
    Envelope,
    b64decode,
    b64encode,
    key_id_of,
    stream_id,
    stream_of,
)

MAX_ATTEMPTS = 30
ORIGIN_RE = re.compile(r"^[!-*,-~]{1,255}$")  # printable ASCII but space and '+'
PARSED_CACHE_STREAMS = 64


@dataclass(frozen=True)
class Submission:
    """One event as an agency submits it: the body it signed, the signature, and the
    narrative texts its commitments stand for (sealed in the vault, never chained)."""

    body: dict[str, Any]
    sig: bytes
    narrative: Mapping[str, NarrativeText] = field(default_factory=dict)
    # The body's RFC 8785 bytes when this process made them to sign (never from a client).
    body_bytes: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def signed(cls, draft: dict[str, Any], signer: Signer) -> Submission:
        """Seal a draft body's free text into commitments (version 2) and sign it."""
        signed = sign_draft(draft, signer)
        return cls(signed.body, signed.sig, signed.texts, signed.body_bytes)


@dataclass(frozen=True)
class Receipt:
    """What the submitter keeps: where its event sits in the chain, and its hash."""

    stream: str
    event_id: str
    seq: int
    event_hash: str
    recorded_at: str
    duplicate: bool = False

    @property
    def case_id(self) -> str | None:
        return self.stream.removeprefix("case/") if self.stream.startswith("case/") else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "stream": self.stream,
            "event_id": self.event_id,
            "seq": self.seq,
            "event_hash": self.event_hash,
            "recorded_at": self.recorded_at,
            "duplicate": self.duplicate,
        }


@dataclass
class _Item:
    body: dict[str, Any]
    body_bytes: bytes
    sig: bytes
    stream: str
    narrative: Mapping[str, NarrativeText] = field(default_factory=dict)


@dataclass(frozen=True)
class _Seen:
    """An agency whose keys a batch is checked against, at the version then seen."""

    agency: Agency
    version: int
    fresh: bool  # read from the database for this batch, not taken from the cache


_Signers = dict[str, _Seen]


def _usable(agency: Agency, key_id: str, now: str) -> bool:
    b64 = agency.active_key(key_id)
    return b64 is not None and agency.keys[key_id]["added_at"] <= now


def _after_batch(
    signers: _Signers, versions: Mapping[UUID, int], pending: Sequence[tuple[int, _Item]]
) -> dict[UUID, int]:
    """The versions the signing agencies' streams will be at once the batch's own
    events are inserted."""
    written = Counter(item.stream for _, item in pending)
    return {
        seen.agency.id: versions.get(seen.agency.id, -1) + written[f"agency/{agency_id}"]
        for agency_id, seen in signers.items()
    }


def check_references(
    body: Mapping[str, Any],
    stream: str,
    recorded: Mapping[str, tuple[str, int]],
    earlier: Callable[[str], str | None],
) -> None:
    """Refuse a body whose `responds_to` or `corrects` names anything but an earlier
    event of its own stream: one before it in the same write (`earlier` gives its
    stream, or None) or one recorded (`recorded`: event id -> originator hex, seq,
    as the event index keeps them)."""
    if not body.get("responds_to") and not body.get("corrects"):
        return  # most events name none: no walk on the append path
    own: str | None = None
    for member, ref in references(body):
        before = earlier(ref)
        if before is not None:
            same = before == stream
        else:
            own = own or stream_id(stream).hex
            same = ref in recorded and recorded[ref][0] == own
        if not same:
            raise ValidationError(
                f"event {body['event_id']}: {member} names {ref}, "
                f"which is not an earlier event of {stream}"
            )


def references(body: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(member, event id) for each event a body names in `responds_to` or `corrects`."""
    for member in ("responds_to", "corrects"):
        value = body.get(member)
        for ref in value if isinstance(value, list) else [value] if value else []:
            if isinstance(ref, str):
                yield member, ref


def _receipt(env: Envelope, duplicate: bool = False) -> Receipt:
    return Receipt(env.stream, env.event_id, env.seq, env.event_hash, env.recorded_at, duplicate)


class Preparation:
    """A batch being validated as its submissions arrive, their signatures checked
    meanwhile on worker threads (keys valid at `now`). The group committer hands
    each single append over as it comes in, so that by the time its window closes
    the batch is ready to write; a submission refused on its own is refused at
    `add` and left out, without costing the others a failed write."""

    def __init__(self, ledger: Ledger, now: datetime, system: bool = False) -> None:
        self.ledger = ledger
        self.now = now
        self.system = system
        self.stamp = format_recorded_at(now)
        self.checks = SignatureChecks(known=ledger.verified_signatures)
        self.signers: _Signers = {}  # each agency as seen, shared by the batch's events
        self.items: list[_Item] = []

    def add(self, submission: Submission) -> None:
        """Validate `submission` and start its signature check, or raise its refusal
        and leave the batch as it was."""
        self.add_item(self.ledger._prepare(submission, self.now, self.system))

    def add_all(self, submissions: Sequence[Submission]) -> None:
        """Add a whole batch, or raise the refusal it would get: in the order they
        would come one at a time, except that a body that does not validate is
        refused before a key that is not the agency's to use."""
        refused: LedgerError | None = None
        for submission in submissions:
            item = self.ledger._prepare(submission, self.now, self.system)
            if refused is None:
                try:
                    self.add_item(item)
                except LedgerError as e:
                    refused = e
        if refused is not None:
            raise refused

    def add_item(self, item: _Item) -> None:
        body = item.body
        try:
            key = self.ledger._public_key(
                body["agency"], body["key_id"], body["event_id"], self.signers, self.stamp
            )
        except SignatureError:
            # A retry of an event recorded before its key was revoked is answered with
            # its original receipt, as any repeat is: its signature is checked with the
            # key it was recorded under, and the write finds it already there.
            seen = self.signers.get(body["agency"])
            record = None if seen is None else seen.agency.keys.get(body["key_id"])
            if record is None or record["revoked_at"] is None:
                raise  # only a revoked key can have signed a recorded event
            if not self.ledger._recorded(item):
                raise
            key = Ed25519PublicKey.from_public_bytes(b64decode(record["public_key"]))
        self.checks.add(key, item.sig, item.body_bytes)
        self.items.append(item)

    def signatures_checked(self) -> None:
        """Wait for the signature checks; raise for the first that fails. Cheap to
        repeat: the results are kept."""
        for refusal in self.refusals():
            if refusal is not None:
                raise refusal

    def refusals(self) -> list[LedgerError | None]:
        """What each added item is refused for on its own, in the order added: only
        its signature can be, as `add` refused anything else. Waits for the checks."""
        return [
            None
            if ok
            else SignatureError(
                f"event {item.body['event_id']}: signature does not verify with key "
                f"{item.body['key_id']} of agency {item.body['agency']!r}"
            )
            for item, ok in zip(self.items, self.checks.results(), strict=True)
        ]


class Ledger:
    """An open ledger: its store and where its keys live."""

    def __init__(self, store: Store, keys_dir: Path) -> None:
        self.store = store
        self.app = store.app
        self.keys_dir = keys_dir
        self._ledger_signer: Signer | None = None
        self._public_keys: dict[str, Ed25519PublicKey] = {}
        self._log: VerifiableLog | None = None
        self._vault: Vault | None = None
        self._vault_lock = threading.Lock()
        self._parsed: dict[str, list[Envelope]] = {}  # recently read cases, oldest first
        self._write_lock = threading.Lock()
        # While set, signatures that verified are not checked again (see
        # remembering_signatures).
        self.verified_signatures: VerifiedSignatures | None = None
        # The ledger clock; tests and simulations replace it, nothing else should.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @classmethod
    def open(cls, db_url: str, keys_dir: Path, create: bool = True) -> Ledger:
        return cls(open_store(db_url, create), keys_dir)

    @contextlib.contextmanager
    def remembering_signatures(self) -> Iterator[None]:
        """Meanwhile, a signature that verified is taken as verified when the same
        bytes come again: an import vets a whole file, signatures included, before it
        writes the same events."""
        self.verified_signatures = VerifiedSignatures()
        try:
            yield
        finally:
            self.verified_signatures = None

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        self.store.close()

    @property
    def log(self) -> VerifiableLog:
        """The Merkle log over this ledger's events (tables created on first use)."""
        if self._log is None:
            self._log = VerifiableLog(self.store)
        return self._log

    def vault(self) -> Vault:
        """The vault (master and linkage keys loaded, and checked, on first use)."""
        with self._vault_lock:
            if self._vault is None:
                self._vault = Vault(self)
            return self._vault

    @property
    def tokens(self) -> TokenStore:
        return TokenStore(self.log.db)

    def issue_token(self, name: str, role: str, agency: str | None = None) -> str:
        """A bearer token; an agency token only for an agency on the register (the
        ledger's own name signs nothing an API caller may send)."""
        if agency is not None and (
            agency == LEDGER_AGENCY or agency not in self._registered_agency_ids()
        ):
            raise NotFound(f"no registered agency {agency!r} to issue a token for")
        return self.tokens.issue(name, role, agency)

    def _registered_agency_ids(self) -> list[str]:
        return [
            row[1].removeprefix("agency/")
            for row in self.store.catalog.index_rows("agency/")
            if row[4] == "AGENCY_REGISTERED"
        ]

    def origin(self) -> str:
        root = self.root()
        if root is None:
            raise NotFound("this database has no ledger yet: run 'ledger init' first")
        return root.origin

    def log_verifier(self) -> NoteVerifier:
        return log_verifier(self.origin(), self.ledger_public_key())

    def checkpoint(self) -> str:
        """Integrate new events and sign a checkpoint with the ledger key."""
        return self.log.checkpoint(self.origin(), self.ledger_signer())

    # --- keys -----------------------------------------------------------------
    @property
    def ledger_key_path(self) -> Path:
        return self.keys_dir / LEDGER_KEY_FILE

    def ledger_signer(self) -> Signer:
        if self._ledger_signer is None:
            self._ledger_signer = load_key_file(self.ledger_key_path)
        return self._ledger_signer

    def agency_key_path(self, agency_id: str) -> Path:
        if not AGENCY_ID_RE.match(agency_id):
            raise ValidationError(f"{agency_id!r} is not an agency id (a-z, 0-9 and '-')")
        return self.keys_dir / "agencies" / f"{agency_id}.key"

    def root(self) -> LedgerRoot | None:
        try:
            root = self._stream(LEDGER_STREAM)
        except AggregateNotFoundError:
            return None
        assert isinstance(root, LedgerRoot)
        return root

    def ledger_public_key(self) -> bytes:
        """The ledger key this database was initialised with (from the genesis event)."""
        root = self.root()
        if root is None:
            raise NotFound("this database has no ledger yet: run 'ledger init' first")
        return b64decode(root.public_key)

    # --- set-up ---------------------------------------------------------------
    def init(self, origin: str) -> bytes:
        """Create the ledger key (if absent) and the genesis event (if absent)."""
        if not ORIGIN_RE.match(origin):
            # The origin is a checkpoint's first line and the name in the log's
            # verifier key (name+hash+key): a space, '+' or newline would break both.
            raise UsageError(
                f"origin {origin!r} must be printable ASCII without spaces or '+', "
                "like ledger.example.gov.uk/log"
            )
        signer = load_or_generate_key_file(self.ledger_key_path)
        pub_path = self.keys_dir / "ledger.pub"
        if not pub_path.exists():
            pub_path.write_text(signer.public_b64 + "\n")
        self._ledger_signer = signer
        root = self.root()
        if root is not None:
            if root.public_key != signer.public_b64:
                raise Conflict(
                    f"this database was initialised with ledger key {root.public_key}, "
                    f"not the key in {self.ledger_key_path}"
                )
            return signer.public_bytes
        self.append_system(
            {"agency_id": None},
            GENESIS_TYPE,
            {"origin": origin, "public_key": signer.public_b64},
            event_id="ledger-genesis",
        )
        return signer.public_bytes

    def _stream(self, name: str) -> LedgerStream:
        """A registry stream's aggregate, replayed from its events (or the cache)."""
        try:
            return cast(LedgerStream, self.app.repository.get(stream_id(name)))
        except (OriginatorVersionError, OriginatorIDError, AssertionError) as e:
            # eventsourcing's replay asserts the first event opens the stream and each
            # next one follows it: a row deleted, moved or renumbered behind its back.
            raise DamagedRecord(
                f"in {name}", f"its events do not run on from its first ({type(e).__name__})"
            ) from None

    def agency(self, agency_id: str) -> Agency:
        try:
            agency = self._stream(f"agency/{agency_id}")
        except AggregateNotFoundError:
            raise NotFound(
                f"unknown agency {agency_id!r}: register it with 'ledger agency add'"
            ) from None
        assert isinstance(agency, Agency)
        return agency

    def register_agency(
        self,
        agency_id: str,
        kind: str,
        borough: str | None = None,
        name: str | None = None,
        public_key: bytes | None = None,
    ) -> tuple[str, Path | None]:
        """Register an agency with a key: a new local key file, or the public key it holds."""
        try:
            AgencyKind(kind)
        except ValueError:
            kinds = ", ".join(k.value for k in AgencyKind)
            raise ValidationError(f"agency kind {kind!r} is not one of {kinds}") from None
        try:
            self.agency(agency_id)
        except NotFound:
            pass
        else:
            raise Conflict(f"agency {agency_id!r} is already registered")
        key_path: Path | None = None
        payload: dict[str, Any] = {"kind": kind}
        if borough:
            payload["borough"] = borough
        if name:
            payload["name"] = name
        self.ledger_signer()  # fail before writing a key file if the ledger key is missing
        self.ledger_public_key()
        stream = {"agency_id": agency_id}
        registration = self.system_submission(
            stream, "AGENCY_REGISTERED", payload, f"agency-{agency_id}-registered"
        )
        # The id becomes a file name: refuse a bad id (or name, or borough) before
        # any key file is written.
        validate_body(registration.body, self.clock())
        pending = None
        if public_key is None:
            key_path, pending, public_key = self._new_local_key(agency_id)
        self.append_many(
            [
                registration,
                self.system_submission(
                    stream,
                    "AGENCY_KEY_ADDED",
                    {"public_key": b64encode(public_key)},
                    f"agency-{agency_id}-key-{key_id_of(public_key)[:16]}",
                ),
            ],
            system=True,
        )
        if pending is not None and key_path is not None:
            install_key_file(pending, key_path)  # a registration that failed ran again
        return key_id_of(public_key), key_path

    def add_agency_key(
        self, agency_id: str, public_key: bytes | None = None
    ) -> tuple[str, Path | None]:
        """Add a key (rotation is add-then-revoke); a local one gets a new key file.

        A local key is made beside the agency's key file and takes its name only once
        the ledger has recorded it, the old file kept as `ID.KEYID.retired`: a failure
        on the way leaves the agency signing with the key it had, and running the
        same command again registers and installs the key made the first time.
        """
        agency = self.agency(agency_id)
        if public_key is not None:
            self._add_key(agency, agency_id, public_key)
            return key_id_of(public_key), None
        key_path, pending, public_key = self._new_local_key(agency_id)
        self._add_key(agency, agency_id, public_key)
        install_key_file(pending, key_path)
        return key_id_of(public_key), key_path

    def _new_local_key(self, agency_id: str) -> tuple[Path, Path, bytes]:
        """(the agency's key file, the new key's file beside it, its public key): made
        there until recorded, and made once, so that a failed attempt run again
        records and installs the same key."""
        key_path = self.agency_key_path(agency_id)
        pending = key_path.with_name(key_path.name + ".new")
        return key_path, pending, load_or_generate_key_file(pending).public_bytes

    def _add_key(self, agency: Agency, agency_id: str, public_key: bytes) -> None:
        if key_id_of(public_key) in agency.keys:
            return  # recorded by an earlier attempt that failed after it
        self.append_system(
            {"agency_id": agency_id},
            "AGENCY_KEY_ADDED",
            {"public_key": b64encode(public_key)},
            event_id=f"agency-{agency_id}-key-{key_id_of(public_key)[:16]}",
        )

    def revoke_agency_key(self, agency_id: str, key_id: str, reason: str) -> Receipt:
        agency = self.agency(agency_id)
        record = agency.keys.get(key_id)
        if record is None:
            raise NotFound(f"agency {agency_id!r} has no key {key_id}")
        if record["revoked_at"] is not None:
            raise Conflict(
                f"key {key_id} of {agency_id!r} was already revoked at {record['revoked_at']}"
            )
        receipt = self.append_system(
            {"agency_id": agency_id},
            "AGENCY_KEY_REVOKED",
            {"key_id": key_id, "reason": reason},
            event_id=f"agency-{agency_id}-revoke-{key_id[:16]}",
        )
        # A signed checkpoint pins the revocation's place in commit order, which is
        # what `ledger verify` judges the key's later use by: until then, whoever
        # holds the database could move a forged event ahead of it.
        self.checkpoint()
        return receipt

    # --- signing helpers --------------------------------------------------------
    def system_submission(
        self,
        stream: dict[str, Any],
        event_type: str,
        payload: dict[str, Any],
        event_id: str,
        occurred_at: datetime | None = None,
        seal: bool = False,
    ) -> Submission:
        """A body the ledger itself signs (registry, genesis, watchdog); with `seal`, its
        free text goes to the vault as for any agency (a person typed it)."""
        signer = self.ledger_signer()
        body: dict[str, Any] = {
            "v": 1,
            "event_id": event_id,
            "type": event_type,
            "occurred_at": format_time(occurred_at or self.clock()),
            "agency": LEDGER_AGENCY,
            "actor": {"role": "ledger"},
            "payload": payload,
            "responds_to": [],
            "corrects": None,
            "key_id": signer.key_id,
        }
        body.update({k: v for k, v in stream.items() if v is not None})
        if seal:
            return Submission.signed(body, signer)
        body_bytes = canonical(body)
        return Submission(body, signer.sign_body(body_bytes), body_bytes=body_bytes)

    def append_system(
        self,
        stream: dict[str, Any],
        event_type: str,
        payload: dict[str, Any],
        event_id: str,
        seal: bool = False,
    ) -> Receipt:
        """Append an event the ledger itself signs (registry, genesis, watchdog)."""
        submission = self.system_submission(stream, event_type, payload, event_id, seal=seal)
        return self.append_many([submission], system=True)[0]

    # --- the append path ----------------------------------------------------------
    def append(self, submission: Submission) -> Receipt:
        return self.append_many([submission])[0]

    def append_many(
        self, submissions: Sequence[Submission], *, system: bool = False
    ) -> list[Receipt]:
        """Validate and save a batch in one transaction; all or nothing."""
        if not submissions:
            return []
        batch = Preparation(self, self.clock(), system)
        try:
            batch.add_all(submissions)
            return self._write(batch)
        finally:
            batch.checks.abandon()  # a batch refused before its checks were waited for

    def append_prepared(self, batch: Preparation) -> list[Receipt]:
        """Save a batch whose submissions were added to `batch` one by one, in one
        transaction; all or nothing."""
        try:
            return self._write(batch) if batch.items else []
        finally:
            batch.checks.abandon()

    def _write(self, batch: Preparation) -> list[Receipt]:
        for attempt in range(MAX_ATTEMPTS):
            keys = self._held_case_keys(batch.items)
            optimistic = attempt == 0 and keys is not None
            try:
                return self._save_exclusively(batch, optimistic, keys)
            except NarrativeErased as e:
                self.vault().forget(e.case_id)  # erased elsewhere: drop the key held here
                if optimistic:
                    continue  # unless the batch repeats what was recorded before it
                raise
            except StoreUnavailable:
                raise
            except LedgerError:
                if optimistic:
                    # A refusal is answered only by an attempt that has looked the
                    # batch's own ids up: a repeat is answered with its receipt (its key
                    # may have been revoked since), a reused id with a conflict,
                    # whatever else the first attempt tripped on. A bad signature is
                    # answered as it stands, without another write (results are kept).
                    batch.signatures_checked()
                    continue
                raise
            except StoreIntegrityError:
                # Another writer took a stream version or an event id first:
                # re-read the streams and try again (idempotency sorts out the rest).
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
            except PersistenceError as e:
                raise StoreUnavailable(f"database error; nothing was written: {e}") from None
        raise Conflict("could not append after repeated concurrent conflicts; retry later")

    def _save_exclusively(
        self, batch: Preparation, optimistic: bool, keys: Mapping[str, bytes] | None
    ) -> list[Receipt]:
        """One writer at a time in this process, and across processes sharing the
        database one at a time for each stream (on SQLite, one at a time): they would
        only race each other for the same stream versions and retry. Validation and
        signature checks still run concurrently.

        A batch waiting its turn finishes its own signature checks first, so the locks
        are never held waiting on checks queued behind other batches'. Alone, a batch
        overlaps its checks with chaining and inserting its events, and commits only
        once they all hold; not where its locks are shared with other processes, which
        would wait on them too.

        An `optimistic` (first) attempt looks up only the events the batch refers to,
        not whether its own ids are already recorded, as they almost never are. The
        database's unique event id refuses a repeat, and the retry, which looks them
        up, answers it with the original receipt (or a conflict). It is optimistic
        only where the case keys of the batch's narrative are all held (`keys`): a
        case's first key is written before the events, so a repeat must be known
        first. Alone with its database, it also trusts this process's cached stream
        heads: a stream another process has extended meanwhile refuses the same
        version twice.
        """
        # Read before the lock: a repeat written meanwhile is refused all the same.
        known = self._known(batch.items, own_ids=not optimistic)
        if self.store.writer_lock is not None or not self._write_lock.acquire(blocking=False):
            batch.signatures_checked()
            self._write_lock.acquire()
        try:
            with self.store.writer():
                trust_cache = optimistic and self.store.url.is_sqlite
                receipts, saved = self._save(batch, known, keys, trust_cache)
            # Committed (PostgreSQL commits as the writer lets go): only now may this
            # process's cache hold the streams at their new heads. A cached head that
            # was never committed would chain the next event after a hash the ledger
            # does not hold.
            cache = self.app.repository.cache
            if cache is not None:
                # The next get() then fast-forwards from here instead of re-reading
                # and re-parsing what this process has just written.
                for agg in saved:
                    cache.put(agg.id, agg)
            return receipts
        finally:
            self._write_lock.release()

    def screen(self, submissions: Sequence[Submission]) -> list[LedgerError | None]:
        """What each submission would be refused for on its own, before any write:
        its body, narrative and signature, with keys as this process last saw them
        (a write confirms them again). Lets a refused batch be split cheaply."""
        # One preparation, its signature checks all running at once: `add` refuses a
        # submission on its own and leaves the others as they were.
        prepared = Preparation(self, self.clock())
        verdicts: list[LedgerError | None] = []
        added: list[int] = []  # where each submission `add` took lies in `verdicts`
        for submission in submissions:
            try:
                prepared.add(submission)
            except LedgerError as e:
                verdicts.append(e)
            else:
                added.append(len(verdicts))
                verdicts.append(None)
        try:
            for at, refusal in zip(added, prepared.refusals(), strict=True):
                verdicts[at] = refusal
        finally:
            prepared.checks.abandon()
        return verdicts

    def _prepare(self, submission: Submission, now: datetime, system: bool) -> _Item:
        body = validate_body(submission.body, now)
        if body["agency"] == LEDGER_AGENCY and not system:
            raise ValidationError(f"event {body['event_id']}: only the ledger may sign as 'ledger'")
        if body["agency"] != LEDGER_AGENCY and (
            body["type"] == GENESIS_TYPE or body["type"] in REGISTRY_TYPES
        ):
            # As `ledger verify` requires: an agency may not register itself or its keys.
            raise ValidationError(
                f"event {body['event_id']}: {body['type']} is recorded only by the ledger "
                f"(ledger agency add / key commands), not signed by {body['agency']!r}"
            )
        check_narrative(body, submission.narrative)
        body_bytes = submission.body_bytes or canonical(body)
        return _Item(body, body_bytes, submission.sig, stream_of(body), submission.narrative)

    def _held_case_keys(self, items: Sequence[_Item]) -> Mapping[str, bytes] | None:
        """The keys of the cases this batch has narrative for, if all are held here;
        None where one would have to be read or made."""
        cases = {str(i.body["case_id"]) for i in items if i.narrative}
        return self.vault().cached_case_keys(cases) if cases else {}

    def _sealed_once_signed(
        self,
        items: Sequence[_Item],
        signatures_checked: Callable[[], None],
        held: Mapping[str, bytes] | None,
    ) -> Callable[[], list[tuple[str, str, str, bytes]]]:
        """What the write transaction calls before it commits: wait for every signature
        to hold (a bad one rolls the batch back), then seal the batch's narrative.

        The events are inserted while the signatures are still being checked, but
        nothing commits, and nothing reaches the vault, unless they all hold. A
        case's first narrative needs a new key, written outside that transaction:
        then the signatures are waited for first, so a forged or repeated
        submission never makes one. The write transaction itself refuses a case
        erased meanwhile, whose key may still be cached here.
        """
        wanted = [i for i in items if i.narrative]
        keys: Mapping[str, bytes] = {} if held is None else held
        if wanted and held is None:
            signatures_checked()
            keys = self.vault().case_keys({str(i.body["case_id"]) for i in wanted})

        def sealed() -> list[tuple[str, str, str, bytes]]:
            signatures_checked()
            return self._seal_narrative(wanted, keys) if wanted else []

        return sealed

    def _seal_narrative(
        self, wanted: Sequence[_Item], keys: Mapping[str, bytes]
    ) -> list[tuple[str, str, str, bytes]]:
        """Rows of sealed narrative for the events about to be written."""
        vault = self.vault()
        rows = []
        for item in wanted:
            case_id, event_id = str(item.body["case_id"]), str(item.body["event_id"])
            key = keys[case_id]
            for name, text in item.narrative.items():
                sealed = vault.seal_narrative(key, case_id, event_id, name, text)
                rows.append((event_id, name, case_id, sealed))
        return rows

    def _public_key(
        self,
        agency_id: str,
        key_id: str,
        event_id: str,
        agencies: _Signers,
        now: str,
    ) -> Ed25519PublicKey:
        if agency_id == LEDGER_AGENCY:
            signer = self.ledger_signer()
            if key_id != signer.key_id:
                raise SignatureError(f"event {event_id}: not signed with the ledger key")
            return signer.private_key.public_key()
        seen = agencies.get(agency_id)
        if seen is None:
            seen = agencies[agency_id] = self._agency_as_seen(agency_id, fresh=False)
        if not seen.fresh and not _usable(seen.agency, key_id, now):
            # Refused as this process last saw the agency: read it before refusing,
            # in case another process has added the key since. The version stays the
            # one seen first: the batch's earlier events were checked against that
            # view, and the write must confirm them again if the agency moved since.
            fresh = self._agency_as_seen(agency_id, fresh=True)
            seen = agencies[agency_id] = _Seen(fresh.agency, seen.version, fresh=True)
        agency = seen.agency
        b64 = agency.active_key(key_id)
        if b64 is not None and agency.keys[key_id]["added_at"] > now:
            raise SignatureError(f"event {event_id}: key {key_id} is not valid yet")
        if b64 is None:
            state = "was revoked" if key_id in agency.keys else "is not a key of this agency"
            raise SignatureError(
                f"event {event_id}: key {key_id} {state}; agency {agency_id!r} may sign only "
                "with its own active key"
            )
        cached = self._public_keys.get(b64)
        if cached is None:
            cached = Ed25519PublicKey.from_public_bytes(b64decode(b64))
            self._public_keys[b64] = cached
        return cached

    def _recorded(self, item: _Item) -> bool:
        """Whether an event with this very id and body is already recorded."""
        event_id = item.body["event_id"]
        where = self.store.catalog.lookup([event_id]).get(event_id)
        return where is not None and self.stored_envelope(*where).body_bytes == item.body_bytes

    def _agency_as_seen(self, agency_id: str, fresh: bool) -> _Seen:
        """The agency as this process last saw it, unless `fresh`: no read per batch.
        `_save` confirms under the batch's locks that it has not moved since."""
        cache = self.app.repository.cache
        if cache is not None and not fresh:
            with contextlib.suppress(KeyError):
                held = cache.get(stream_id(f"agency/{agency_id}"))
                if isinstance(held, Agency):
                    # The version before the keys: a fast-forward in between makes the
                    # keys newer than the version, so the check under the lock re-reads.
                    return _Seen(held, held.version, fresh=False)
        agency = self.agency(agency_id)
        return _Seen(agency, agency.version, fresh=True)

    def _confirm_signers(
        self, items: Sequence[_Item], signers: _Signers, versions: Mapping[UUID, int], now: str
    ) -> None:
        """Under the batch's locks: where an agency's stream has moved since its keys were
        looked at (a key revoked, here or by another process), check its events'
        keys again, as the agency now stands."""
        moved = {
            agency_id
            for agency_id, seen in signers.items()
            if versions.get(seen.agency.id) != seen.version
        }
        if not moved:
            return
        fresh: _Signers = {a: self._agency_as_seen(a, fresh=True) for a in moved}
        for item in items:
            body = item.body
            if body["agency"] in moved:
                self._public_key(body["agency"], body["key_id"], body["event_id"], fresh, now)

    def stored_envelope(self, originator_id: UUID | str, seq: int) -> Envelope:
        rows = self.app.recorder.select_events(originator_id, gt=seq - 1, lte=seq)
        if not rows:
            raise NotFound(f"no event at seq {seq} of stream {originator_id}")
        return read_stored(rows[0].state, seq, f"stream {originator_id}")

    def _known(self, items: Sequence[_Item], own_ids: bool) -> dict[str, tuple[str, int]]:
        """Where the events the batch refers to, and with `own_ids` its own event ids,
        already are."""
        wanted = {r for i in items for r in [*i.body["responds_to"], i.body["corrects"]] if r}
        if own_ids:
            wanted.update(i.body["event_id"] for i in items)
        return self.store.catalog.lookup(sorted(wanted)) if wanted else {}

    def _save(
        self,
        batch: Preparation,
        known: dict[str, tuple[str, int]],
        keys: Mapping[str, bytes] | None,
        trust_cache: bool,
    ) -> tuple[list[Receipt], list[LedgerStream]]:
        """The batch's receipts, and the streams it extended (to cache once committed)."""
        items, signers = batch.items, batch.signers
        receipts: list[Receipt | None] = [None] * len(items)
        in_batch: dict[str, _Item] = {}

        def earlier(event_id: str) -> str | None:  # the stream of one before it in the batch
            item = in_batch.get(event_id)
            return None if item is None else item.stream

        streams: dict[str, LedgerStream | None] = {}
        pending: list[tuple[int, _Item]] = []
        for n, item in enumerate(items):
            event_id = item.body["event_id"]
            if event_id in known:
                originator, seq = known[event_id]
                stored = self.stored_envelope(originator, seq)
                if stored.body_bytes != item.body_bytes:
                    # Where it is, only to the agency that recorded it: an agency
                    # probing ids must not learn of other agencies' cases.
                    where = (
                        f"{stored.stream} seq {stored.seq}"
                        if stored.agency == item.body["agency"]
                        else "by another agency"
                    )
                    raise Conflict(
                        f"event id {event_id} is already recorded ({where}) with a different body"
                    )
                receipts[n] = _receipt(stored, duplicate=True)
                continue
            if event_id in in_batch:
                if in_batch[event_id].body_bytes != item.body_bytes:
                    raise Conflict(
                        f"event id {event_id} appears twice in the batch with different bodies"
                    )
                continue
            check_references(item.body, item.stream, known, earlier)
            in_batch[event_id] = item
            pending.append((n, item))
            streams.setdefault(item.stream, None)
        agency_versions = self._load_streams(
            streams, trust_cache, {seen.agency.id: seen.version for seen in signers.values()}
        )
        now = format_recorded_at(self.clock())
        self._confirm_signers([item for _, item in pending], signers, agency_versions, now)
        index_rows: list[tuple[Any, ...]] = []
        envelopes: dict[str, Envelope] = {}
        for n, item in pending:
            agg = streams[item.stream]
            seq = 1 if agg is None else agg.version + 1
            prev = None if agg is None else agg.head
            recorded_at = now if agg is None or agg.recorded_at <= now else agg.recorded_at
            raw = envelope_bytes(item.body_bytes, item.sig, seq, recorded_at, prev)
            env = Envelope(
                raw,
                sha256_hex(raw),
                item.body_bytes,
                item.body,
                item.sig,
                seq,
                recorded_at,
                prev,
                item.stream,
            )
            if agg is None:
                if item.stream.startswith("agency/") and item.body["type"] != "AGENCY_REGISTERED":
                    raise NotFound(f"unknown agency {item.body['agency_id']!r}")
                agg = stream_class(item.stream).open(env)
                streams[item.stream] = agg
            else:
                agg.record(env)
            envelopes[item.body["event_id"]] = env
            index_rows.append(
                (
                    env.event_id,
                    item.stream,
                    stream_id(item.stream).hex,
                    seq,
                    env.type,
                    env.agency,
                    item.body["occurred_at"],
                    recorded_at,
                )
            )
            receipts[n] = _receipt(env)
        if index_rows:
            saved = [a for a in streams.values() if a is not None]
            # Straight to the event store: Application.save would test every aggregate
            # against two runtime-checkable protocols (tens of µs each) to learn what
            # is already known here, and this ledger takes no snapshots and has no
            # followers to notify.
            events = [e for agg in saved for e in agg.collect_events()]
            self.app.events.put(
                events,
                index_rows=index_rows,
                agency_versions=_after_batch(signers, agency_versions, pending),
                before_commit=self._sealed_once_signed(
                    [item for _, item in pending], batch.signatures_checked, keys
                ),
            )
        else:
            saved = []
            batch.signatures_checked()  # every signature holds before anything is answered
        for n, item in enumerate(items):
            if receipts[n] is None:  # a repeat of an earlier item in this batch
                receipts[n] = _receipt(envelopes[item.body["event_id"]], duplicate=True)
        return [r for r in receipts if r is not None], saved

    def _load_streams(
        self,
        streams: dict[str, LedgerStream | None],
        trust_cache: bool,
        versions_of: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, int]:
        """Current aggregates for a batch's streams, in one query: it finds each
        stream's latest version, and brings its newest event unless a cached
        aggregate is at that version already. A case's state is only its chain head,
        so that event is all a stale one (written by another process, say) needs.
        With `trust_cache`, cached streams are taken as they are (see
        `_save_exclusively`) and only the others are read. The same query finds
        the latest versions of the streams `versions_of` (stream → version seen),
        even where cached, and returns them."""
        ids = {name: stream_id(name) for name in streams}
        cache = self.app.repository.cache
        held: dict[UUID, LedgerStream] = {}
        if cache is not None:
            for oid in ids.values():
                with contextlib.suppress(KeyError):
                    held[oid] = cast(LedgerStream, cache.get(oid))
        current: dict[UUID, tuple[int, bytes | None]] = {}
        if trust_cache:
            current = {oid: (agg.version, None) for oid, agg in held.items()}
        unread = [
            (oid, held[oid].version if oid in held else 0)
            for oid in ids.values()
            if oid not in current
        ]
        asked = {oid for oid, _ in unread}
        wanted = versions_of or {}
        unread += [(oid, seen) for oid, seen in wanted.items() if oid not in asked]
        # Before the heads are read: a batch sharing a stream waits until this one has
        # committed, and an agency's keys cannot change under it.
        written = set(ids.values())
        self.store.catalog.lock_streams(written, [oid for oid in wanted if oid not in written])
        found = self.store.catalog.current(unread) if unread else {}
        current.update({oid: row for oid, row in found.items() if oid in asked})
        for name, oid in ids.items():
            if oid not in current:
                streams[name] = None
                continue
            newest = current[oid][1]
            if newest is None:
                streams[name] = held[oid].__deepcopy__({})  # the cache's own cheap copy
            elif name.startswith(("case/", "access/")):
                env = read_stored(newest, current[oid][0], name)
                streams[name] = stream_class(name).at_head(oid, env)
            else:
                streams[name] = self._stream(name)
        return {oid: found[oid][0] for oid in wanted if oid in found}

    # --- reading ----------------------------------------------------------------------
    def stream_envelopes(self, stream: str, page: int = 1000) -> Iterable[Envelope]:
        """The events of one stream in order, read a page at a time."""
        originator = stream_id(stream)
        after = 0
        while True:
            rows = self.app.recorder.select_events(originator, gt=after, limit=page)
            for row in rows:
                yield read_stored(row.state, row.originator_version, stream)
            if len(rows) < page:
                return
            after = rows[-1].originator_version

    def case_envelopes(self, case_id: str, cached: bool = True) -> list[Envelope]:
        """A case's events in seq order.

        Stored events never change, so parsed ones are kept for recently read cases
        and only events after the cached head are read again (one query finds the
        head). Verification never uses this cache; it reads the stored bytes.
        """
        stream = f"case/{case_id}"
        oid = stream_id(stream)
        if not cached:
            envs = list(self.stream_envelopes(stream))
        else:
            head = self.store.catalog.heads([oid]).get(oid, 0)
            envs = self._parsed.pop(stream, [])
            if len(envs) > head:  # the store was changed behind our back: start again
                envs = []
            if len(envs) < head:
                after = envs[-1].seq if envs else 0
                rows = self.app.recorder.select_events(oid, gt=after)
                envs = envs + [read_stored(r.state, r.originator_version, stream) for r in rows]
            self._parsed[stream] = envs
            while len(self._parsed) > PARSED_CACHE_STREAMS:
                self._parsed.pop(next(iter(self._parsed)))
        if not envs:
            raise NotFound(f"no case {case_id!r} in this ledger")
        return list(envs)

    def record_access(self, case_id: str, reader: str, role: str, route: str) -> Receipt:
        """Put a panel's or auditor's read of a case on record (the access log stream)."""
        return self.record_accesses([(case_id, reader, role, route)])[0]

    def record_accesses(self, reads: Sequence[tuple[str, str, str, str]]) -> list[Receipt]:
        """Put several reads (case or `subject:<ref>`, reader, role, route) on record at once."""
        moment = self.clock()
        submissions = []
        for case_id, reader, role, route in reads:
            unique = f"{case_id}\0{reader}\0{route}\0{moment.isoformat()}\0{os.urandom(8).hex()}"
            submissions.append(
                self.system_submission(
                    {"case_id": case_id},
                    "ACCESS_READ",
                    {"reader": reader, "summary": f"{role} {route}"},
                    event_id="access-" + sha256_hex(unique.encode())[:40],
                    occurred_at=moment,
                )
            )
        return self.append_many(submissions, system=True)

    def access_log(self, case_id: str) -> list[Envelope]:
        return list(self.stream_envelopes(f"access/{case_id}"))

    def agencies(self) -> dict[str, Agency]:
        """Every registered agency, each read once from its registry stream."""
        return {agency_id: self.agency(agency_id) for agency_id in self._registered_agency_ids()}

    def agency_kinds(self) -> dict[str, str]:
        """Each registered agency's kind (police, csc, ...), read from the registry."""
        return {agency_id: a.kind for agency_id, a in self.agencies().items()}

    def iter_case_ids(self, page: int = 1000) -> Iterable[str]:
        """Every case id, a page at a time, in id order."""
        after = "case/"
        while True:
            streams = self.store.catalog.streams_after(after, "case/", page)
            for stream in streams:
                yield stream.removeprefix("case/")
            if len(streams) < page:
                return
            after = streams[-1]

    def cases(self) -> list[dict[str, Any]]:
        """One summary per case from the index (a listing, not a verification)."""
        boroughs = {agency_id: a.borough for agency_id, a in self.agencies().items()}
        summary: dict[str, dict[str, Any]] = {}
        for row in self.store.catalog.index_rows("case/"):
            case_id = row[1].removeprefix("case/")
            entry = summary.setdefault(
                case_id,
                {
                    "case_id": case_id,
                    "events": 0,
                    "agencies": [],
                    "first_occurred_at": row[6],
                    "last_occurred_at": row[6],
                    "last_recorded_at": row[7],
                },
            )
            entry["events"] += 1
            if row[5] != LEDGER_AGENCY and row[5] not in entry["agencies"]:
                entry["agencies"].append(row[5])
            entry["first_occurred_at"] = min(entry["first_occurred_at"], row[6])
            entry["last_occurred_at"] = max(entry["last_occurred_at"], row[6])
            entry["last_recorded_at"] = max(entry["last_recorded_at"], row[7])
        for entry in summary.values():
            entry["boroughs"] = sorted(
                {b for a in entry["agencies"] if (b := boroughs.get(a)) is not None}
            )
        return sorted(summary.values(), key=lambda e: e["case_id"])
