"""Case, agency and ledger streams as eventsourcing aggregates.

Each aggregate event carries one canonical envelope. The aggregate keeps only
what the append path needs (seq, chain head, last recorded time, and for an
agency its keys), so loading one is cheap; the stored bytes remain the record.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from .errors import DamagedRecord
from .verify import Envelope, FormatError, b64decode, key_id_of, parse_envelope, stream_id


def _timestamp(env: Envelope) -> datetime:
    return datetime.fromisoformat(env.recorded_at.replace("Z", "+00:00"))


# The envelope most recently parsed or built here. The append path builds an
# Envelope, then eventsourcing's mutate() calls apply() with the same bytes
# object; reusing the parse (checked by identity) halves the work per event.
_recent: Envelope | None = None


def _parsed(raw: bytes) -> Envelope:
    global _recent
    env = _recent
    if env is not None and env.raw is raw:
        return env
    env = parse_envelope(raw)
    _recent = env
    return env


def read_stored(state: bytes, version: int, stream: str | UUID) -> Envelope:
    """The envelope stored as event `version` of `stream` (a name, or an id), parsed and
    kept as `_parsed` does; a row no envelope can be read from is reported as damaged,
    where it is (which is put into words only then: replay reads every event here)."""
    try:
        return _parsed(state if type(state) is bytes else bytes(state))
    except FormatError as e:
        raise DamagedRecord(stored_at(version, stream), e) from None


def stored_at(version: int, stream: str | UUID) -> str:
    return f"{version} of {stream if isinstance(stream, str) else f'stream {stream}'}"


def _remember(env: Envelope) -> None:
    global _recent
    _recent = env


class LedgerStream(Aggregate):
    """One hash-chained stream of envelopes (a case, an agency's registry, the ledger root)."""

    class Opened(Aggregate.Created):
        envelope: bytes

        @classmethod
        def from_stored(cls, originator_id: UUID, version: int, state: bytes) -> Any:
            env = _parsed(state)
            return cls(
                originator_id=originator_id,
                originator_version=version,
                timestamp=_timestamp(env),
                originator_topic=get_topic(cls.aggregate_class()),
                envelope=state,  # type: ignore[call-arg]
            )

        @classmethod
        def aggregate_class(cls) -> type[LedgerStream]:
            return LedgerStream

    class Recorded(Aggregate.Event):
        envelope: bytes

        @classmethod
        def from_stored(cls, originator_id: UUID, version: int, state: bytes) -> Any:
            return cls(
                originator_id=originator_id,
                originator_version=version,
                timestamp=_timestamp(_parsed(state)),
                envelope=state,  # type: ignore[call-arg]
            )

        def apply(self, aggregate: LedgerStream) -> None:
            aggregate.fold(_parsed(self.envelope))

    def __init__(self, envelope: bytes) -> None:
        # State is declared here, not as class annotations: eventsourcing would
        # turn those into constructor arguments.
        self.stream: str = ""
        self.head: str | None = None
        self.recorded_at: str = ""
        self.setup()
        self.fold(_parsed(envelope))

    def setup(self) -> None:
        """Hook for subclasses to declare their extra state."""

    def __deepcopy__(self, memo: dict[int, Any]) -> LedgerStream:
        """Cheap copy for eventsourcing's cache: envelopes and strings are immutable."""
        clone = copy.copy(self)
        clone._pending_events = []
        clone.copy_mutable_state()
        return clone

    def copy_mutable_state(self) -> None:
        """Hook: replace containers this copy shares with the original."""

    @classmethod
    def at_head(cls, originator_id: UUID, env: Envelope) -> LedgerStream:
        """The aggregate as of its newest event, without replaying the stream.

        Valid for streams whose state is only the chain head (cases): the newest
        envelope holds seq, hash and recorded time, so appending to a long case
        costs the same as appending to a new one.
        """
        agg = cls.__new__(cls)
        agg.__base_init__(
            originator_id=originator_id, originator_version=env.seq, timestamp=_timestamp(env)
        )
        agg.stream, agg.head, agg.recorded_at = env.stream, env.event_hash, env.recorded_at
        agg.setup()
        return agg

    @classmethod
    def open(cls, env: Envelope) -> LedgerStream:
        _remember(env)
        stream = cls._create(
            cls.Opened,
            id=stream_id(env.stream),
            timestamp=_timestamp(env),
            envelope=env.raw,
        )
        return stream

    def record(self, env: Envelope) -> None:
        _remember(env)
        self.trigger_event(self.Recorded, timestamp=_timestamp(env), envelope=env.raw)

    def fold(self, env: Envelope) -> None:
        self.stream = env.stream
        self.head = env.event_hash
        self.recorded_at = env.recorded_at
        self.on_event(env)

    def on_event(self, env: Envelope) -> None:
        """Hook for subclasses that keep more state than the chain head."""


class Case(LedgerStream):
    """A case's chronology: every agency's events about one child or episode."""

    class Opened(LedgerStream.Opened):
        @classmethod
        def aggregate_class(cls) -> type[LedgerStream]:
            return Case

    def __init__(self, envelope: bytes) -> None:  # eventsourcing would generate one otherwise
        super().__init__(envelope)


class AccessLog(LedgerStream):
    """Who read a case, when and through which route: hash-chained like the case."""

    class Opened(LedgerStream.Opened):
        @classmethod
        def aggregate_class(cls) -> type[LedgerStream]:
            return AccessLog

    def __init__(self, envelope: bytes) -> None:  # eventsourcing would generate one otherwise
        super().__init__(envelope)


class Agency(LedgerStream):
    """An agency's registry stream: registration, keys added and revoked."""

    class Opened(LedgerStream.Opened):
        @classmethod
        def aggregate_class(cls) -> type[LedgerStream]:
            return Agency

    def __init__(self, envelope: bytes) -> None:  # eventsourcing would generate one otherwise
        super().__init__(envelope)

    def setup(self) -> None:
        self.kind: str = ""
        self.borough: str | None = None
        self.name: str | None = None
        self.keys: dict[str, dict[str, Any]] = {}

    def copy_mutable_state(self) -> None:
        self.keys = {k: dict(v) for k, v in self.keys.items()}

    def on_event(self, env: Envelope) -> None:
        payload = env.body["payload"]
        if env.type == "AGENCY_REGISTERED":
            self.kind = payload["kind"]
            self.borough = payload.get("borough")
            self.name = payload.get("name")
        elif env.type == "AGENCY_KEY_ADDED":
            key_id = key_id_of(b64decode(payload["public_key"]))
            self.keys[key_id] = {
                "public_key": payload["public_key"],
                "added_at": env.recorded_at,
                "revoked_at": None,
            }
        elif env.type == "AGENCY_KEY_REVOKED":
            self.keys[payload["key_id"]]["revoked_at"] = env.recorded_at

    def active_key(self, key_id: str) -> str | None:
        """The base64 public key if `key_id` is this agency's and not revoked."""
        record = self.keys.get(key_id)
        if record is None or record["revoked_at"] is not None:
            return None
        return str(record["public_key"])


class LedgerRoot(LedgerStream):
    """The genesis stream: the ledger's origin name and public key."""

    class Opened(LedgerStream.Opened):
        @classmethod
        def aggregate_class(cls) -> type[LedgerStream]:
            return LedgerRoot

    def __init__(self, envelope: bytes) -> None:  # eventsourcing would generate one otherwise
        super().__init__(envelope)

    def setup(self) -> None:
        self.origin: str = ""
        self.public_key: str = ""

    def on_event(self, env: Envelope) -> None:
        if env.type == "LEDGER_INITIALISED":
            self.origin = env.body["payload"]["origin"]
            self.public_key = env.body["payload"]["public_key"]


def event_class(
    stream: str, version: int
) -> type[LedgerStream.Opened] | type[LedgerStream.Recorded]:
    """The class of a stream's event at `version`: it opens the stream, or is recorded in it."""
    kind = stream_class(stream)
    return kind.Opened if version == 1 else kind.Recorded


def stream_class(stream: str) -> type[LedgerStream]:
    if stream.startswith("case/"):
        return Case
    if stream.startswith("agency/"):
        return Agency
    if stream.startswith("access/"):
        return AccessLog
    return LedgerRoot


STREAM_KINDS: tuple[type[LedgerStream], ...] = (Case, Agency, AccessLog, LedgerRoot)
