"""Offline verification of stored ledger events: the auditor's side of the formats.

Everything here works from the stored bytes alone and needs only the standard
library and `cryptography`, so an auditor can check a ledger or a bundle without
installing the server (`orjson`, where installed, only decodes faster: see `_loads`).
Nothing is re-serialised: the event hash is SHA-256 of the stored envelope bytes
and the agency signature covers the body bytes carried verbatim inside the
envelope (see docs/FORMATS.md).

This module must never import the rest of the ledger.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

try:
    import orjson as _orjson
except ImportError:  # the standard library decodes alone, to the same answers
    _orjson = None  # type: ignore[assignment]

ENVELOPE_VERSION = 1
# Version 2 bodies may carry `narrative`: salted commitments to free text kept in the vault.
BODY_VERSIONS = (1, 2)
NARRATIVE_FIELDS = ("rationale", "summary")
NARRATIVE_CONTEXT = b"response-ledger/v2/narrative\n"
# Domain separation: an event-body signature can never be replayed as any other
# kind of signature made with the same key (checkpoint notes, for instance).
SIGNING_CONTEXT = b"response-ledger/v1/event-body\n"
STREAM_NAMESPACE = uuid.UUID("6f1c8a52-3c1e-5d0b-9a57-2f4f1c0de5a1")
LEDGER_AGENCY = "ledger"
LEDGER_STREAM = "ledger"
GENESIS_TYPE = "LEDGER_INITIALISED"
# Ledger-wide facts kept in the ledger's own stream: its genesis, and vault erasures.
LEDGER_STREAM_TYPES = frozenset({GENESIS_TYPE, "SUBJECT_ERASED", "NARRATIVE_ERASED"})
ACCESS_TYPE = "ACCESS_READ"  # kept in the case's access log stream, not its chronology
REGISTRY_TYPES = frozenset({"AGENCY_REGISTERED", "AGENCY_KEY_ADDED", "AGENCY_KEY_REVOKED"})

ENVELOPE_KEYS = frozenset({"v", "body", "sig", "seq", "recorded_at", "prev_hash"})
BODY_KEYS = frozenset(
    {
        "v",
        "event_id",
        "type",
        "occurred_at",
        "agency",
        "actor",
        "payload",
        "responds_to",
        "corrects",
        "key_id",
    }
)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")
RECORDED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class FormatError(ValueError):
    """Stored bytes are not a well-formed envelope or body."""


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict base64. The usual, canonical case decodes in one call; anything else takes
    the standard decoder's path, so it is accepted or refused exactly as there."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        return base64.b64decode(text.encode("ascii"), validate=True)


def key_id_of(public_key: bytes) -> str:
    """Key id: the first 16 bytes of SHA-256 over the raw 32-byte public key, in hex."""
    return hashlib.sha256(public_key).hexdigest()[:32]


def narrative_commitment(field_name: str, text: str, salt: bytes) -> str:
    """The salted commitment a version 2 body carries for one narrative field.

    The 32-byte salt travels only into the vault, so short texts ("NFA") cannot be
    guessed from the chain; whoever is shown the text and salt can check it here.
    """
    if len(salt) != 32:
        raise ValueError("a narrative salt is 32 bytes")
    return sealed_commitment(field_name, salt + text.encode("utf-8"))


def sealed_commitment(field_name: str, salt_and_text: bytes) -> str:
    """The commitment over what the vault seals for a field: salt (32) ‖ UTF-8 text."""
    salt, text = salt_and_text[:32], salt_and_text[32:]
    return hashlib.sha256(
        NARRATIVE_CONTEXT + salt + field_name.encode() + b"\x00" + text
    ).hexdigest()


def signing_message(body_bytes: bytes) -> bytes:
    return SIGNING_CONTEXT + body_bytes


@functools.lru_cache(maxsize=4096)
def stream_id(stream: str) -> uuid.UUID:
    """The eventsourcing originator id of a stream name (`case/…`, `agency/…`, `ledger`)."""
    return uuid.uuid5(STREAM_NAMESPACE, stream)


def stream_of(body: dict[str, Any]) -> str:
    """Which stream a body belongs to; decided by signed fields only."""
    kind = body.get("type")
    if kind in LEDGER_STREAM_TYPES:
        return LEDGER_STREAM
    if kind in REGISTRY_TYPES:
        return f"agency/{body['agency_id']}"
    if kind == ACCESS_TYPE:
        return f"access/{body['case_id']}"
    return f"case/{body['case_id']}"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed stored event. `raw` is exactly what was stored and hashed."""

    raw: bytes
    event_hash: str
    body_bytes: bytes
    body: dict[str, Any]
    sig: bytes
    seq: int
    recorded_at: str
    prev_hash: str | None
    stream_name: str = ""  # filled in by the parser; derived from the body otherwise

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])

    @property
    def type(self) -> str:
        return str(self.body["type"])

    @property
    def agency(self) -> str:
        return str(self.body["agency"])

    @property
    def key_id(self) -> str:
        return str(self.body["key_id"])

    @property
    def stream(self) -> str:
        return self.stream_name or stream_of(self.body)

    @property
    def case_id(self) -> str | None:
        value = self.body.get("case_id")
        return None if value is None else str(value)


_DECODER = json.JSONDecoder()


def _decode(text: str) -> Any:
    """`json.loads` for stored bytes, which are canonical (no surrounding whitespace):
    the scanner alone, falling back to the full decoder, and so to the same answers
    and errors, for anything else."""
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        end = -1
    return value if end == len(text) else _DECODER.decode(text)


# orjson and the standard decoder differ on what both accept in two ways only: an
# integer past 64 bits (orjson makes it a float) and deep nesting, where the standard
# decoder gives up at the interpreter's recursion limit (1,000 less the stack in use)
# and orjson at 1,024 levels. A text of FAST_MAX_BYTES nests at most 600 deep, and
# one with no run of 19 digits holds no such integer.
FAST_MAX_BYTES = 1200
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"0" * 9)
_LONG_NUMBER = b"0" * 19


def fast_decodable(data: bytes) -> bool:
    """Whether orjson gives exactly the standard decoder's value for `data`, if any."""
    return len(data) <= FAST_MAX_BYTES and _LONG_NUMBER not in data.translate(_DIGITS_AS_ZERO)


def _loads(data: bytes, text: str | None = None, fast: bool | None = None) -> Any:
    """`_decode` of `data` (UTF-8; `text` if already decoded), through orjson where it is
    installed and `fast_decodable` says it agrees. Whatever orjson refuses goes to the
    standard decoder, so the answers and errors, and so verify's findings, never
    depend on whether orjson is installed (reading events is most of what verify
    does besides checking signatures)."""
    if _orjson is not None and (fast_decodable(data) if fast is None else fast):
        try:
            return _orjson.loads(data if text is None else text)
        except _orjson.JSONDecodeError:
            pass
    return _decode(data.decode("utf-8") if text is None else text)


def parse_body(
    body_bytes: bytes, text: str | None = None, fast: bool | None = None
) -> dict[str, Any]:
    """`fast`: whether `fast_decodable(body_bytes)` is known (of the envelope around it)."""
    try:
        source = body_bytes.decode("utf-8") if text is None else text
        body = _loads(body_bytes, source, fast)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise FormatError("body is not a JSON object")
    if not body.keys() >= BODY_KEYS:
        raise FormatError(f"body lacks {', '.join(sorted(BODY_KEYS - body.keys()))}")
    if body["v"] not in BODY_VERSIONS or isinstance(body["v"], bool):
        raise FormatError(f"body version {body['v']!r} is not one of {BODY_VERSIONS}")
    if "narrative" in body:
        narrative = body["narrative"]
        if body["v"] < 2 or not isinstance(narrative, dict) or not narrative:
            raise FormatError("narrative belongs only in a version 2 body, as a non-empty object")
        for name, value in narrative.items():
            if name not in NARRATIVE_FIELDS or not HASH_RE.match(str(value)):
                raise FormatError(f"narrative.{name} is not a commitment to a narrative field")
    kind = body["type"]
    if kind in REGISTRY_TYPES:
        if not isinstance(body.get("agency_id"), str):
            raise FormatError("registry body lacks agency_id")
    elif kind not in LEDGER_STREAM_TYPES and not isinstance(body.get("case_id"), str):
        raise FormatError("body lacks case_id")
    if not isinstance(body["occurred_at"], str) or not TIMESTAMP_RE.match(body["occurred_at"]):
        raise FormatError(f"occurred_at {body['occurred_at']!r} is not a UTC RFC 3339 time")
    for name in ("event_id", "type", "agency", "key_id"):
        if not isinstance(body[name], str):
            raise FormatError(f"body field {name} is not a string")
    # JSON can spell a string no UTF-8 can hold (a lone surrogate, only ever by a
    # \u escape): the fields that name streams, keys and index rows must be text
    # that can be stored and hashed.
    if "\\u" in source:
        for name in ("event_id", "type", "agency", "key_id", "case_id", "agency_id"):
            value = body.get(name)
            if isinstance(value, str) and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise FormatError(f"body field {name} is not valid Unicode") from None
    return body


def parse_envelope(raw: bytes) -> Envelope:
    """Parse stored bytes strictly; raise FormatError saying what is wrong."""
    fast = _orjson is not None and fast_decodable(raw)
    try:
        env = _loads(raw, fast=fast)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"envelope is not JSON: {e}") from None
    if not isinstance(env, dict) or env.keys() != ENVELOPE_KEYS:
        raise FormatError("envelope fields are not exactly " + ", ".join(sorted(ENVELOPE_KEYS)))
    if env["v"] != ENVELOPE_VERSION:
        raise FormatError(f"envelope version {env['v']!r} is not {ENVELOPE_VERSION}")
    body_text, seq, recorded_at, prev = (
        env["body"],
        env["seq"],
        env["recorded_at"],
        env["prev_hash"],
    )
    if not isinstance(body_text, str):
        raise FormatError("envelope body is not a string of canonical JSON")
    if type(seq) is not int or seq < 1:
        raise FormatError(f"seq {seq!r} is not a positive integer")
    if not isinstance(recorded_at, str) or not RECORDED_AT_RE.match(recorded_at):
        raise FormatError(f"recorded_at {recorded_at!r} is malformed")
    if prev is not None and (not isinstance(prev, str) or not HASH_RE.match(prev)):
        raise FormatError(f"prev_hash {prev!r} is malformed")
    try:
        sig = b64decode(env["sig"])
    except (ValueError, AttributeError, TypeError):
        raise FormatError("sig is not base64") from None
    body_bytes = body_text.encode("utf-8")
    # No longer than the envelope and, with no \u escape in it, no digit it lacked.
    body = parse_body(body_bytes, body_text, fast and b"\\u" not in raw)
    return Envelope(
        raw=raw,
        event_hash=hashlib.sha256(raw).hexdigest(),
        body_bytes=body_bytes,
        body=body,
        sig=sig,
        seq=seq,
        recorded_at=recorded_at,
        prev_hash=prev,
        stream_name=stream_of(body),
    )


def verify_chunk(chunk: list[tuple[Ed25519PublicKey, bytes, bytes]]) -> list[bool]:
    """Signature results for (key, sig, body) triples; run on worker threads."""
    return [signature_ok(k, s, b) for k, s, b in chunk]


_KEYS_BY_BYTES: dict[bytes, Ed25519PublicKey] = {}


def verify_raw_chunk(chunk: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    """Like `verify_chunk` but with raw public keys, so it can run in another process."""
    results = []
    for raw, sig, body in chunk:
        key = _KEYS_BY_BYTES.get(raw)
        if key is None:
            key = _KEYS_BY_BYTES[raw] = Ed25519PublicKey.from_public_bytes(raw)
        results.append(signature_ok(key, sig, body))
    return results


def signature_ok(public_key: Ed25519PublicKey, sig: bytes, body_bytes: bytes) -> bool:
    try:
        public_key.verify(sig, signing_message(body_bytes))
    except InvalidSignature:
        return False
    return True


@dataclass(slots=True)
class ChainState:
    """The running head of one stream while its events are read in order."""

    stream: str
    seq: int = 0
    head: str | None = None
    recorded_at: str = ""

    def check(self, env: Envelope, stored_version: int) -> list[str]:
        """Problems linking `env` to what came before; advances the head regardless."""
        problems: list[str] = []
        expected = self.seq + 1
        stream = env.stream
        if stream != self.stream:
            problems.append(f"body names stream {stream!r} but is stored in {self.stream!r}")
        if stored_version != env.seq:
            problems.append(
                f"stored at position {stored_version} but its seq is {env.seq} (events reordered)"
            )
        if env.seq > expected:
            problems.append(
                f"seq {expected}..{env.seq - 1} missing before this event (deleted?)"
                if env.seq - 1 > expected
                else f"seq {expected} missing before this event (deleted?)"
            )
        elif env.seq < expected:
            problems.append(f"seq {env.seq} repeats or goes back (expected {expected})")
        if env.prev_hash != self.head:
            problems.append(
                "prev_hash does not match the hash of the preceding event "
                "(an event was edited, inserted, deleted or reordered)"
            )
        if env.recorded_at < self.recorded_at:
            problems.append(
                f"recorded_at {env.recorded_at} is earlier than the preceding event's "
                f"{self.recorded_at} (back-dated)"
            )
        self.seq, self.head, self.recorded_at = env.seq, env.event_hash, env.recorded_at
        return problems


@dataclass(slots=True)
class KeyRecord:
    agency: str
    public_key: Ed25519PublicKey
    added_at: str
    revoked_at: str | None = None
    # Commit order (notification id, or leaf index in a bundle) of the addition and
    # revocation, where the verifier knows it.
    added_pos: int | None = None
    revoked_pos: int | None = None


@dataclass(slots=True)
class KeyRegistry:
    """Agency keys as the verified registry events describe them, with validity times."""

    ledger_key_id: str
    ledger_key: Ed25519PublicKey
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    agencies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, env: Envelope, position: int | None = None) -> None:
        """Fold a registry event that has already verified into the registry, with its
        place in commit order when known."""
        if env.type not in REGISTRY_TYPES:
            return
        payload = env.body["payload"]
        agency = env.body["agency_id"]
        if env.type == "AGENCY_REGISTERED":
            self.agencies[agency] = {
                "kind": payload.get("kind"),
                "borough": payload.get("borough"),
                "name": payload.get("name"),
            }
        elif env.type == "AGENCY_KEY_ADDED":
            raw = b64decode(payload["public_key"])
            self.keys[key_id_of(raw)] = KeyRecord(
                agency, Ed25519PublicKey.from_public_bytes(raw), env.recorded_at, None, position
            )
        elif env.type == "AGENCY_KEY_REVOKED":
            record = self.keys.get(payload["key_id"])
            if record is not None and record.agency == agency and record.revoked_at is None:
                record.revoked_at, record.revoked_pos = env.recorded_at, position

    def key_for(
        self, env: Envelope, position: int | None = None
    ) -> tuple[Ed25519PublicKey | None, str | None]:
        """The key that must have signed `env`, or None with the reason it is unusable.

        With `position` (its place in commit order) the key is also judged by where
        the event was stored: `recorded_at` is the ledger's field, not signed by the
        agency, and whoever held a revoked key and the database could write an event
        after the revocation with a `recorded_at` before it. The append path refuses
        a key revoked by the time its event commits, so the ledger stores none such.
        """
        signer, kind, key_id, recorded_at = env.agency, env.type, env.key_id, env.recorded_at
        if kind == GENESIS_TYPE or kind in REGISTRY_TYPES or signer == LEDGER_AGENCY:
            if signer != LEDGER_AGENCY:
                return None, f"{kind} must be signed by the ledger, not {signer!r}"
            if key_id != self.ledger_key_id:
                return (
                    None,
                    f"signed with key {key_id}, not the ledger key {self.ledger_key_id}",
                )
            return self.ledger_key, None
        record = self.keys.get(key_id)
        if record is None:
            return None, f"key {key_id} is not a registered key"
        if record.agency != signer:
            return None, (
                f"key {key_id} belongs to agency {record.agency!r}, "
                f"but the event claims agency {signer!r}"
            )
        if recorded_at < record.added_at:
            return None, f"signed with key {key_id} before it was registered"
        if record.revoked_at is not None and recorded_at >= record.revoked_at:
            return None, f"signed with key {key_id}, revoked at {record.revoked_at}"
        if position is not None:
            if record.added_pos is not None and position < record.added_pos:
                return None, (
                    f"stored (position {position}) before its key {key_id} was "
                    f"registered (position {record.added_pos})"
                )
            if record.revoked_pos is not None and position > record.revoked_pos:
                return None, (
                    f"signed with key {key_id} but stored (position {position}) after "
                    f"the key's revocation (position {record.revoked_pos}): recorded_at "
                    f"{recorded_at} is back-dated"
                )
        return record.public_key, None


# --- RFC 9162 proof verification (also used by ledger.merkle) ------------------------
HASH_SIZE = 32


class InvalidProof(ValueError):
    """A proof does not show what it claims; the message says what was expected."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_hashes(proof: Sequence[bytes]) -> None:
    for n, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise InvalidProof(f"proof element {n} has {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies, RFC 9162 §2.1.3.2 steps 1 to 4."""
    if index >= size:
        raise InvalidProof(f"leaf index {index} is not below tree size {size}")
    if len(leaf) != HASH_SIZE:
        raise InvalidProof(f"leaf hash has {len(leaf)} bytes, expected {HASH_SIZE}")
    _check_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidProof(f"inclusion proof too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof(f"inclusion proof too short: {len(proof)} hashes")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    computed = root_from_inclusion(index, size, leaf, proof)
    if computed != root:
        raise InvalidProof(f"inclusion proof gives root {computed.hex()}, expected {root.hex()}")


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> None:
    """RFC 9162 §2.1.4.2, with the edge cases of transparency-dev/merkle's vectors.

    Equal sizes need an empty proof and equal roots (compared as given, whatever
    their length); a first size of 0 is refused, since it proves nothing.
    """
    if second < first:
        raise InvalidProof(f"tree shrank from size {first} to {second}")
    if first == 0:
        raise InvalidProof("consistency with an empty tree proves nothing")
    if first == second:
        if proof:
            raise InvalidProof("sizes are equal but the proof is not empty")
        if first_root != second_root:
            raise InvalidProof("sizes are equal but the roots differ")
        return
    if not proof:
        raise InvalidProof("consistency proof is empty")
    _check_hashes(proof)
    path = list(proof)
    if is_power_of_two(first):
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof(f"consistency proof too long: {len(proof)} hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof(f"consistency proof too short: {len(proof)} hashes")
    if fr != first_root:
        raise InvalidProof(f"proof gives first root {fr.hex()}, expected {first_root.hex()}")
    if sr != second_root:
        raise InvalidProof(f"proof gives second root {sr.hex()}, expected {second_root.hex()}")


# --- C2SP signed notes, checkpoints, cosignatures (also used by ledger.checkpoint) ------
ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"
_SIG_LINE = re.compile(rf"^{DASH} (\S+) ([A-Za-z0-9+/=]+)$")


class NoteError(ValueError):
    """A note, checkpoint or key is malformed or a signature does not verify."""


def key_hash(name: str, alg: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


@dataclass(frozen=True)
class NoteVerifier:
    """A verifier key: `name+hash+base64(alg || public key)`."""

    name: str
    alg: int
    public: bytes

    @property
    def key_id(self) -> bytes:
        return key_hash(self.name, self.alg, self.public)

    def encode(self) -> str:
        payload = base64.b64encode(bytes([self.alg]) + self.public).decode()
        return f"{self.name}+{self.key_id.hex()}+{payload}"

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not parts[0] or len(parts[1]) != 8:
            raise NoteError(f"verifier key {text!r} is not name+hash+key")
        try:
            raw = base64.b64decode(parts[2], validate=True)
            wanted = bytes.fromhex(parts[1])
        except ValueError:
            raise NoteError(f"verifier key {text!r} has bad hex or base64") from None
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("verifier key is not an Ed25519 (0x01) or cosignature (0x04) key")
        verifier = cls(parts[0], raw[0], raw[1:])
        if verifier.key_id != wanted:
            raise NoteError(f"verifier key hash {parts[1]} does not match its name and key")
        return verifier

    def key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    sig: bytes  # for cosignatures: 8-byte timestamp then the signature


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Separate a signed note's text from its signature lines."""
    if not note.endswith("\n"):
        raise NoteError("note does not end with a newline")
    at = note.rfind("\n\n")
    if at < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: at + 1], note[at + 2 :]
    signatures = []
    for line in block[:-1].split("\n"):
        match = _SIG_LINE.match(line)
        if match is None:
            raise NoteError(f"malformed signature line {line!r}")
        try:
            blob = base64.b64decode(match.group(2), validate=True)
        except ValueError:
            raise NoteError(f"signature line {line!r} is not base64") from None
        if len(blob) < 5:
            raise NoteError(f"signature line {line!r} is too short")
        signatures.append(NoteSignature(match.group(1), blob[:4], blob[4:]))
    if not signatures:
        raise NoteError("note has no signatures")
    return text, signatures


def open_note(note: str, verifier: NoteVerifier) -> str:
    """The note's text, if a signature by `verifier` on it verifies."""
    text, signatures = split_note(note)
    for s in signatures:
        if s.name == verifier.name and s.key_id == verifier.key_id:
            try:
                verifier.key().verify(s.sig, text.encode())
            except InvalidSignature:
                raise NoteError(f"signature by {verifier.name} does not verify") from None
            return text
    raise NoteError(f"note is not signed by {verifier.name} ({verifier.key_id.hex()})")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("checkpoint body needs origin, size and root lines")
        origin, size, root = lines[0], lines[1], lines[2]
        # ASCII digits only ("²" is a digit to str.isdigit), and no more than a
        # 64-bit tree size needs.
        if (
            not origin
            or not (size.isascii() and size.isdigit() and len(size) <= 20)
            or (size != "0" and size.startswith("0"))
        ):
            raise NoteError(f"bad checkpoint origin or size {size!r}")
        try:
            raw = base64.b64decode(root, validate=True)
        except ValueError:
            raise NoteError("checkpoint root is not base64") from None
        if len(raw) != 32:
            raise NoteError(f"checkpoint root has {len(raw)} bytes, expected 32")
        return cls(origin, int(size), raw)


def verify_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    checkpoint = Checkpoint.parse(open_note(note, verifier))
    if checkpoint.origin != verifier.name:
        raise NoteError(f"checkpoint origin {checkpoint.origin!r} is not {verifier.name!r}")
    return checkpoint


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint_text}".encode()


def verify_cosignature(note: str, verifier: NoteVerifier) -> int:
    """The timestamp of `verifier`'s valid cosignature on the note's checkpoint."""
    text, signatures = split_note(note)
    for s in signatures:
        if s.name == verifier.name and s.key_id == verifier.key_id:
            if len(s.sig) != 72:
                raise NoteError("cosignature is not 8 + 64 bytes")
            (timestamp,) = struct.unpack(">Q", s.sig[:8])
            try:
                verifier.key().verify(s.sig[8:], cosignature_message(text, timestamp))
            except InvalidSignature:
                raise NoteError(f"cosignature by {verifier.name} does not verify") from None
            return int(timestamp)
    raise NoteError(f"no cosignature by {verifier.name}")


def add_signature_lines(note: str, lines: list[str]) -> str:
    """The note with extra signature lines appended (cosignatures served beside it)."""
    return note + "".join(line + "\n" for line in lines)


# --- evidence bundles -------------------------------------------------------------
BUNDLE_FORMAT = "response-ledger-bundle/v1"
BUNDLE_KEYS = frozenset(
    {"format", "case_id", "stream_id", "log", "checkpoint", "tree_size", "entries"}
)
ENTRY_KEYS = frozenset({"stream", "seq", "bytes", "leaf_index", "inclusion"})


@dataclass
class BundleReport:
    case_id: str
    tree_size: int
    events: int
    entries: int
    witnesses: list[str]


def verify_bundle(
    bundle: dict[str, Any], log_key: str, witness_keys: Sequence[str] = ()
) -> BundleReport:
    """Check an evidence bundle offline; raise FormatError naming the first problem.

    The log key is the only trusted input: the checkpoint must be signed by it,
    every entry must be proved included in that checkpoint, the genesis entry
    must name the same key, every stream in the bundle must be complete from seq 1
    and correctly chained, and every signature must verify with a key valid when
    the event was recorded. Witness keys, if given, must each have cosigned.
    """
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise FormatError(f"not a {BUNDLE_FORMAT} bundle")
    if bundle.keys() != BUNDLE_KEYS:
        raise FormatError("bundle fields are not exactly " + ", ".join(sorted(BUNDLE_KEYS)))
    try:
        verifier = NoteVerifier.parse(log_key)
        checkpoint = verify_checkpoint(bundle["checkpoint"], verifier)
        witnesses = []
        for wk in witness_keys:
            w = NoteVerifier.parse(wk)
            verify_cosignature(bundle["checkpoint"], w)
            witnesses.append(w.name)
    except (NoteError, KeyError, TypeError) as e:
        raise FormatError(f"checkpoint: {e}") from None
    case_id = bundle["case_id"]
    if bundle["log"] != {"origin": verifier.name, "verifier_key": verifier.encode()}:
        raise FormatError("bundle names a different log than the key it is checked with")
    if type(bundle["tree_size"]) is not int or bundle["tree_size"] != checkpoint.size:
        raise FormatError(
            f"tree_size {bundle['tree_size']!r} is not the checkpoint's {checkpoint.size}"
        )
    if not isinstance(case_id, str) or bundle["stream_id"] != str(stream_id(f"case/{case_id}")):
        raise FormatError("stream_id does not belong to the bundle's case_id")
    envelopes: dict[str, list[Envelope]] = {}
    positions: dict[str, int] = {}  # event hash -> leaf index: the log's commit order
    for n, entry in enumerate(bundle["entries"]):
        where = f"entry {n}"
        try:
            where = f"entry {n} ({entry.get('stream')} seq {entry.get('seq')})"
            if entry.keys() != ENTRY_KEYS:
                raise FormatError("entry fields are not exactly " + ", ".join(sorted(ENTRY_KEYS)))
            if type(entry["seq"]) is not int or type(entry["leaf_index"]) is not int:
                raise FormatError("its seq and leaf_index must be whole numbers")
            raw = b64decode(entry["bytes"])
            verify_inclusion(
                entry["leaf_index"],
                checkpoint.size,
                leaf_hash(raw),
                [b64decode(h) for h in entry["inclusion"]],
                checkpoint.root,
            )
            env = parse_envelope(raw)
            if (entry["stream"], entry["seq"]) != (env.stream, env.seq):
                raise FormatError("its stream and seq do not match its bytes")
        except (InvalidProof, FormatError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"{where}: {e}") from None
        envelopes.setdefault(env.stream, []).append(env)
        positions[env.event_hash] = entry["leaf_index"]
    genesis = envelopes.get(LEDGER_STREAM, [])
    if not genesis or genesis[0].body["payload"].get("public_key") != b64encode(verifier.public):
        raise FormatError("the bundle's genesis event does not name the log key")
    registry = KeyRegistry(key_id_of(verifier.public), verifier.key())
    case_stream = f"case/{case_id}"
    if case_stream not in envelopes:
        raise FormatError(f"the bundle holds no events of {case_stream}")
    order = [LEDGER_STREAM, *sorted(s for s in envelopes if s.startswith("agency/"))]
    order += [s for s in envelopes if s not in order]
    for stream in order:
        chain = ChainState(stream)
        for env in sorted(envelopes[stream], key=lambda e: e.seq):
            where = f"{stream} seq {env.seq} (event {env.event_id})"
            problems = chain.check(env, env.seq)
            if problems:
                raise FormatError(f"{where}: {problems[0]}")
            key, why = registry.key_for(env, positions[env.event_hash])
            if key is None:
                raise FormatError(f"{where}: {why}")
            if not signature_ok(key, env.sig, env.body_bytes):
                raise FormatError(f"{where}: signature does not verify")
            registry.apply(env, positions[env.event_hash])
    return BundleReport(
        str(bundle["case_id"]),
        checkpoint.size,
        len(envelopes[case_stream]),
        sum(len(v) for v in envelopes.values()),
        witnesses,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ledger.verify BUNDLE --log-key VKEY [--witness-key VKEY]...`"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m ledger.verify", description="Verify an evidence bundle offline."
    )
    parser.add_argument("bundle")
    parser.add_argument("--log-key", required=True)
    parser.add_argument("--witness-key", action="append", default=[])
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    def fail(reason: str) -> int:
        if args.json:
            print(json.dumps({"ok": False, "error": reason}))
        else:
            print(f"FAIL: {reason}", file=sys.stderr)
        return 1

    try:
        with open(args.bundle, encoding="utf-8") as f:
            bundle = json.load(f)
    except OSError as e:
        return fail(f"cannot read {args.bundle}: {e.strerror or e}")
    except UnicodeDecodeError:
        return fail(f"{args.bundle} is not UTF-8 text, so not a bundle")
    except json.JSONDecodeError as e:
        return fail(f"{args.bundle} is not JSON ({e.msg} at line {e.lineno} column {e.colno})")
    except ValueError as e:  # valid JSON beyond Python's limits: a number of 4,300+ digits
        return fail(f"{args.bundle} is not usable JSON: {e}")
    except RecursionError:
        return fail(f"{args.bundle} nests too deeply to be a bundle")
    try:
        report = verify_bundle(bundle, args.log_key, args.witness_key)
    except ValueError as e:
        return fail(str(e))
    except (KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        # A member missing or of the wrong kind: the bundle is not what it claims.
        return fail(f"the bundle is malformed ({type(e).__name__}: {e})")
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "case_id": report.case_id,
                    "events": report.events,
                    "registry_events": report.entries - report.events,
                    "tree_size": report.tree_size,
                    "witnesses": report.witnesses,
                }
            )
        )
        return 0
    print(
        f"OK: case {report.case_id}: {report.events} events and "
        f"{report.entries - report.events} registry events proved in a checkpoint of "
        f"{report.tree_size} events"
        + (f", cosigned by {', '.join(report.witnesses)}" if report.witnesses else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
