"""C2SP signed notes, tlog checkpoints and tlog cosignatures (Ed25519).

A checkpoint body is `origin\\nsize\\nbase64(root)\\n`; the log signs it as a signed
note; witnesses add timestamped cosignatures. Signing is here; parsing and
verification live in `ledger.verify` (the standalone verifier) and are re-exported.
"""

from __future__ import annotations

import base64
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .verify import (  # verification lives in the standalone verifier
    COSIGNATURE_V1,
    DASH,
    ED25519,
    Checkpoint,
    NoteError,
    NoteSignature,
    NoteVerifier,
    add_signature_lines,
    cosignature_message,
    key_hash,
    open_note,
    split_note,
    verify_checkpoint,
    verify_cosignature,
)


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    public = key.public_key().public_bytes_raw()
    blob = key_hash(name, ED25519, public) + key.sign(text.encode())
    return f"{text}\n{DASH} {name} {base64.b64encode(blob).decode()}\n"


def cosign(checkpoint_text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> str:
    """A cosignature line (without newline) for a checkpoint body."""
    public = key.public_key().public_bytes_raw()
    sig = key.sign(cosignature_message(checkpoint_text, timestamp))
    blob = key_hash(name, COSIGNATURE_V1, public) + struct.pack(">Q", timestamp) + sig
    return f"{DASH} {name} {base64.b64encode(blob).decode()}"


__all__ = [
    "COSIGNATURE_V1",
    "DASH",
    "ED25519",
    "Checkpoint",
    "NoteError",
    "NoteSignature",
    "NoteVerifier",
    "add_signature_lines",
    "cosign",
    "cosignature_message",
    "key_hash",
    "open_note",
    "sign_note",
    "split_note",
    "verify_checkpoint",
    "verify_cosignature",
]
