"""C2SP signed notes, tlog checkpoints and tlog cosignatures (Ed25519).

A checkpoint body is `origin\\nsize\\nbase64(root)\\n`; the log signs it as a signed
note; witnesses add timestamped cosignatures. Standard library and
`cryptography` only, so bundles and witnesses verify without the server.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    public = key.public_key().public_bytes_raw()
    blob = key_hash(name, ED25519, public) + key.sign(text.encode())
    return f"{text}\n{DASH} {name} {base64.b64encode(blob).decode()}\n"


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
        if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
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


def cosign(checkpoint_text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """A cosignature line (without newline) for a checkpoint body."""
    public = key.public_key().public_bytes_raw()
    sig = key.sign(cosignature_message(checkpoint_text, timestamp))
    blob = key_hash(name, COSIGNATURE_V1, public) + struct.pack(">Q", timestamp) + sig
    return f"{DASH} {name} {base64.b64encode(blob).decode()}"


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
