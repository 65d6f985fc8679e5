"""C2SP signed notes, checkpoints and cosignatures, against the Go project's note vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    NoteError,
    NoteVerifier,
    add_signature_lines,
    cosign,
    open_note,
    sign_note,
    verify_checkpoint,
    verify_cosignature,
)

NOTES = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors" / "signed-note"
CASES: list[dict[str, Any]] = [
    c for p in sorted(NOTES.glob("*.json")) for c in json.loads(p.read_text())["cases"]
]


def test_note_vectors_present() -> None:
    assert len(CASES) >= 3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["desc"])
def test_go_signed_note_vectors(case: dict[str, Any]) -> None:
    if case["wantErr"]:
        with pytest.raises(NoteError):
            open_note(case["note"], NoteVerifier.parse(case["vkey"]))
    else:
        assert open_note(case["note"], NoteVerifier.parse(case["vkey"])) == case["text"]


def test_verifier_key_round_trip_and_hash_check() -> None:
    key = Ed25519PrivateKey.generate()
    v = NoteVerifier("example.org/log", ED25519, key.public_key().public_bytes_raw())
    assert NoteVerifier.parse(v.encode()) == v
    name, _, material = v.encode().split("+", 2)
    with pytest.raises(NoteError, match="does not match"):
        NoteVerifier.parse(f"{name}+{'0' * 8}+{material}")


def test_checkpoint_sign_verify_and_tamper() -> None:
    key = Ed25519PrivateKey.generate()
    v = NoteVerifier("example.org/log", ED25519, key.public_key().public_bytes_raw())
    cp = Checkpoint("example.org/log", 12, bytes(range(32)))
    note = sign_note(cp.body(), "example.org/log", key)
    assert verify_checkpoint(note, v) == cp
    with pytest.raises(NoteError):
        verify_checkpoint(note.replace("\n12\n", "\n13\n"), v)


def test_cosignature_round_trip() -> None:
    log, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    cp = Checkpoint("example.org/log", 3, bytes(32))
    note = sign_note(cp.body(), "example.org/log", log)
    line = cosign(cp.body(), "witness.example/w1", witness, 1_700_000_000)
    both = add_signature_lines(note, [line])
    wv = NoteVerifier("witness.example/w1", COSIGNATURE_V1, witness.public_key().public_bytes_raw())
    assert verify_cosignature(both, wv) == 1_700_000_000
    lv = NoteVerifier("example.org/log", ED25519, log.public_key().public_bytes_raw())
    assert verify_checkpoint(both, lv) == cp
    with pytest.raises(NoteError):
        verify_cosignature(both.replace("\n3\n", "\n4\n"), wv)
