"""Regenerate the known-answer vectors in tests/vectors/ deterministically.

Run only when a format changes on purpose. Tests check the committed files against
the code, and check that this script, run again, writes them byte for byte: a
vector nobody can regenerate is no evidence of what the code does.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.canonical import canonical, envelope_bytes, sha256_hex
from ledger.keys import Signer

# RFC 8032 section 7.1, TEST 1 secret key: a published key, fine for vectors only.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
VECTORS = Path(__file__).resolve().parent.parent / "tests" / "vectors"


def generate(into: Path) -> None:
    """Write every vector file under `into`, laid out as tests/vectors/ is."""
    into.mkdir(parents=True, exist_ok=True)
    signer = Signer(Ed25519PrivateKey.from_private_bytes(SEED))
    event_vectors(into, signer)
    narrative_vectors(into, signer)
    merkle_vectors(into)
    note_vectors(into, signer)
    bundle_vectors(into, signer)


def event_vectors(into: Path, signer: Signer) -> None:
    body = {
        "v": 1,
        "case_id": "DEMO-LAM-0001",
        "event_id": "DEMO-LAM-0001-006",
        "type": "REFERRAL_DECISION",
        "occurred_at": "2024-04-19T16:45:00Z",
        "agency": "lambeth-csc",
        "actor": {"role": "team manager", "ref": "staff_abcdefghijklmnopqrstuvwxyz"},
        "payload": {
            "child_ref": "child_abcdefghijklmnopqrstuvwxyz",
            "decision": "nfa",
            "rationale": "Décision: no further action — “see notes”\n",
        },
        "responds_to": ["DEMO-LAM-0001-005"],
        "corrects": None,
        "key_id": signer.key_id,
    }
    body_bytes = canonical(body)
    sig = signer.sign_body(body_bytes)
    prev = "0" * 63 + "1"
    env = envelope_bytes(body_bytes, sig, 6, "2026-11-25T12:00:00.000000Z", prev)
    good = env.decode()
    sig_b64 = json.loads(env)["sig"]
    flipped = ("B" if sig_b64[0] != "B" else "C") + sig_b64[1:]
    negatives = [
        (
            "payload-byte-edited",
            good.replace("no further action", "no further actiom"),
            "signature",
        ),
        (
            "occurred-at-backdated",
            good.replace("2024-04-19T16:45", "2024-03-19T16:45"),
            "signature",
        ),
        ("signature-first-char-changed", good.replace(sig_b64, flipped), "signature"),
        ("envelope-extra-field", good[:-1] + ',"x":1}', "format"),
        ("envelope-version-2", good.replace('"v":1}', '"v":2}'), "format"),
        ("body-not-json", good.replace('"body":"{', '"body":"[', 1), "format"),
        ("seq-zero", good.replace('"seq":6', '"seq":0'), "format"),
        (
            "recorded-at-without-microseconds",
            good.replace("2026-11-25T12:00:00.000000Z", "2026-11-25T12:00:00Z"),
            "format",
        ),
    ]
    out = {
        "description": "Response Ledger event format v1 known-answer vectors (docs/FORMATS.md)",
        "signing_key_seed_hex": SEED.hex(),
        "public_key_b64": signer.public_b64,
        "key_id": signer.key_id,
        "rfc8032_test1": {
            "message_hex": "",
            "signature_hex": signer.sign(b"").hex(),
        },
        "body": body,
        "body_canonical": body_bytes.decode(),
        "signing_message_hex": (b"response-ledger/v1/event-body\n" + body_bytes).hex(),
        "signature_b64": json.loads(env)["sig"],
        "seq": 6,
        "recorded_at": "2026-11-25T12:00:00.000000Z",
        "prev_hash": prev,
        "envelope": good,
        "event_hash": sha256_hex(env),
        "negative": [{"name": n, "envelope": e, "fails": f} for n, e, f in negatives],
    }
    (into / "events.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


def narrative_vectors(into: Path, signer: Signer) -> None:
    """Body version 2: a rationale committed (salted SHA-256), its text beside the body."""
    from ledger.verify import narrative_commitment

    salt = bytes(range(32))
    text = "Décision: no further action — “see notes”\n"
    commitment = narrative_commitment("rationale", text, salt)
    body = {
        "v": 2,
        "case_id": "DEMO-LAM-0001",
        "event_id": "DEMO-LAM-0001-006",
        "type": "REFERRAL_DECISION",
        "occurred_at": "2024-04-19T16:45:00Z",
        "agency": "lambeth-csc",
        "actor": {"role": "team manager", "ref": "staff_abcdefghijklmnopqrstuvwxyz"},
        "payload": {"child_ref": "child_abcdefghijklmnopqrstuvwxyz", "decision": "nfa"},
        "responds_to": ["DEMO-LAM-0001-005"],
        "corrects": None,
        "key_id": signer.key_id,
        "narrative": {"rationale": commitment},
    }
    body_bytes = canonical(body)
    sig = signer.sign_body(body_bytes)
    env = envelope_bytes(body_bytes, sig, 6, "2026-11-25T12:00:00.000000Z", "0" * 63 + "1")
    good = env.decode()
    alt = "0" if commitment[-1] != "0" else "1"
    out = {
        "description": "Body version 2 (narrative commitments) known-answer vectors",
        "commitment_input_hex": (
            b"response-ledger/v2/narrative\n" + salt + b"rationale\x00" + text.encode()
        ).hex(),
        "field": "rationale",
        "text": text,
        "salt_b64": b64(salt),
        "commitment": commitment,
        "body": body,
        "body_canonical": body_bytes.decode(),
        "signature_b64": b64(sig),
        "envelope": good,
        "event_hash": sha256_hex(env),
        "wrong_texts": [text.rstrip("\n"), text.replace("no further", "No further"), ""],
        "negative": [
            {
                "name": "narrative-in-version-1-body",
                "envelope": good.replace('\\"v\\":2', '\\"v\\":1'),
                "fails": "format",
            },
            {
                "name": "commitment-not-hex",
                "envelope": good.replace(commitment, commitment[:-1] + "g"),
                "fails": "format",
            },
            {
                "name": "field-not-narrative",
                "envelope": good.replace('{\\"rationale\\":', '{\\"decision\\":'),
                "fails": "format",
            },
            {
                "name": "commitment-edited",
                "envelope": good.replace(commitment, commitment[:-1] + alt),
                "fails": "signature",
            },
        ],
    }
    assert all(n["envelope"] != good for n in out["negative"])  # type: ignore[union-attr]
    (into / "narrative.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


# --- Merkle, signed-note and bundle vectors ------------------------------------------
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def merkle_vectors(into: Path) -> None:
    from ledger.merkle import LeafList, consistency_proof, inclusion_proof, leaf_hash, root_of

    leaves = [leaf_hash(f"event {i}".encode()) for i in range(13)]
    inclusion, consistency = [], []
    for size in (1, 2, 3, 5, 8, 13):
        tree, root = LeafList(leaves[:size]), root_of(leaves[:size])
        for index in sorted({0, size // 2, size - 1}):
            proof = inclusion_proof(tree, index, size)
            good = {
                "leafIdx": index,
                "treeSize": size,
                "leafHash": b64(leaves[index]),
                "root": b64(root),
                "proof": [b64(h) for h in proof],
            }
            inclusion.append({**good, "desc": "happy path", "wantErr": False})
            inclusion.append({**good, "leafIdx": index + 1, "desc": "wrong index", "wantErr": True})
            inclusion.append({**good, "treeSize": size * 2, "desc": "wrong size", "wantErr": True})
            inclusion.append(
                {
                    **good,
                    "proof": good["proof"] + [b64(b"\x00" * 32)],
                    "desc": "extra hash",
                    "wantErr": True,
                }
            )
            if proof:
                inclusion.append(
                    {**good, "proof": good["proof"][:-1], "desc": "missing hash", "wantErr": True}
                )
                flipped = bytes([proof[0][0] ^ 0x10]) + proof[0][1:]
                inclusion.append(
                    {
                        **good,
                        "proof": [b64(flipped), *good["proof"][1:]],
                        "desc": "modified hash",
                        "wantErr": True,
                    }
                )
        for first in range(1, size):
            proof = consistency_proof(tree, first, size)
            good = {
                "size1": first,
                "size2": size,
                "root1": b64(root_of(leaves[:first])),
                "root2": b64(root),
                "proof": [b64(h) for h in proof],
            }
            consistency.append({**good, "desc": "happy path", "wantErr": False})
            consistency.append(
                {**good, "proof": good["proof"][:-1], "desc": "missing hash", "wantErr": True}
            )
            consistency.append(
                {
                    **good,
                    "proof": [*good["proof"], b64(b"\x00" * 32)],
                    "desc": "extra hash",
                    "wantErr": True,
                }
            )
            consistency.append(
                {
                    **good,
                    "root1": good["root2"],
                    "root2": good["root1"],
                    "desc": "swapped roots",
                    "wantErr": True,
                }
            )
            flipped = bytes([proof[-1][0] ^ 0x01]) + proof[-1][1:]
            consistency.append(
                {
                    **good,
                    "proof": [*good["proof"][:-1], b64(flipped)],
                    "desc": "modified hash",
                    "wantErr": True,
                }
            )
    from ledger.merkle import InvalidProof, verify_consistency, verify_inclusion

    def holds(check: Any, *args: Any) -> bool:
        try:
            check(*args)
        except InvalidProof:
            return False
        return True

    d = base64.b64decode
    for c in inclusion:  # every vector says what the verifier really does
        ok = holds(
            verify_inclusion,
            c["leafIdx"],
            c["treeSize"],
            d(c["leafHash"]),
            [d(h) for h in c["proof"]],
            d(c["root"]),
        )
        assert ok != c["wantErr"], c
    for c in consistency:
        ok = holds(
            verify_consistency,
            c["size1"],
            c["size2"],
            [d(h) for h in c["proof"]],
            d(c["root1"]),
            d(c["root2"]),
        )
        assert ok != c["wantErr"], c
    out = into / "rfc9162"
    out.mkdir(parents=True, exist_ok=True)
    (out / "inclusion.json").write_text(json.dumps(inclusion, indent=1) + "\n")
    (out / "consistency.json").write_text(json.dumps(consistency, indent=1) + "\n")


def note_vectors(into: Path, signer: Signer) -> None:
    from ledger.checkpoint import Checkpoint, NoteVerifier, cosign, sign_note
    from ledger.verify import COSIGNATURE_V1, ED25519

    origin = "vectors.response-ledger.test/log"
    body = Checkpoint(origin, 13, bytes(range(32))).body()
    note = sign_note(body, origin, signer.private_key)
    witness = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    line = cosign(body, "witness.test/w1", witness, 1_764_000_000)
    vkey = NoteVerifier(origin, ED25519, signer.public_bytes).encode()
    wkey = NoteVerifier(
        "witness.test/w1", COSIGNATURE_V1, witness.public_key().public_bytes_raw()
    ).encode()
    cases = [
        {"desc": "checkpoint signed by the log", "note": note, "vkey": vkey, "wantErr": False},
        {
            "desc": "size altered after signing",
            "note": note.replace("\n13\n", "\n14\n"),
            "vkey": vkey,
            "wantErr": True,
        },
        {
            "desc": "signed under another name",
            "note": note.replace(f"— {origin} ", "— x.test "),
            "vkey": vkey,
            "wantErr": True,
        },
        {"desc": "no signature lines", "note": body + "\n", "vkey": vkey, "wantErr": True},
        {
            "desc": "cosigned by a witness",
            "note": note + line + "\n",
            "vkey": wkey,
            "cosignature": True,
            "wantErr": False,
        },
        {
            "desc": "cosignature over another size",
            "note": note.replace("\n13\n", "\n12\n") + line + "\n",
            "vkey": wkey,
            "cosignature": True,
            "wantErr": True,
        },
    ]
    (into / "signed-note.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


def bundle_vectors(into: Path, signer: Signer) -> None:
    """A deterministic ledger (fixed keys and clock), exported, and tampered copies."""
    import copy
    import tempfile
    from datetime import UTC, datetime, timedelta

    from ledger.bundle import export_bundle
    from ledger.core import Ledger, Submission

    agency = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
    other = Signer(Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34))))
    with tempfile.TemporaryDirectory() as d:
        keys = Path(d) / "keys"
        keys.mkdir(mode=0o700)
        (keys / "ledger.key").write_bytes(
            signer.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (keys / "ledger.key").chmod(0o600)
        ledger = Ledger.open(f"sqlite:///{d}/v.sqlite", keys)
        t = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        ledger.clock = lambda: t
        ledger.init("vectors.response-ledger.test/log")
        ledger.register_agency(
            "police-v", "police", borough="Testborough", public_key=agency.public_bytes
        )
        for n, kind in enumerate(["DISCLOSURE_RECEIVED", "INCIDENT_LOGGED", "CHILD_SEEN"]):
            ledger.clock = lambda n=n: t + timedelta(minutes=n + 1)  # type: ignore[misc]
            body = {
                "v": 1,
                "case_id": "V-1",
                "event_id": f"v-{n}",
                "type": kind,
                "occurred_at": "2024-03-03T14:05:00Z",
                "agency": "police-v",
                "actor": {"role": "officer"},
                "payload": {},
                "responds_to": [],
                "corrects": None,
                "key_id": agency.key_id,
            }
            ledger.append(Submission(body, agency.sign_body(canonical(body))))
        valid = export_bundle(ledger, "V-1")
        log_key = ledger.log_verifier().encode()
        ledger.close()
    out = into / "bundles"
    out.mkdir(parents=True, exist_ok=True)
    (out / "log-key.txt").write_text(log_key + "\n")
    (out / "valid.json").write_text(json.dumps(valid, indent=1) + "\n")
    edited = copy.deepcopy(valid)
    last = edited["entries"][-1]
    last["bytes"] = b64(base64.b64decode(last["bytes"]).replace(b"CHILD_SEEN", b"CHILD_SEEM"))
    dropped = copy.deepcopy(valid)
    dropped["entries"] = [
        e for e in dropped["entries"] if not (e["stream"] == "case/V-1" and e["seq"] == 2)
    ]
    foreign = copy.deepcopy(valid)
    from ledger.checkpoint import sign_note

    text = foreign["checkpoint"].split("\n\n")[0] + "\n"
    foreign["checkpoint"] = sign_note(text, "vectors.response-ledger.test/log", other.private_key)
    for name, bundle in (
        ("tampered-byte", edited),
        ("tampered-dropped-event", dropped),
        ("tampered-foreign-checkpoint", foreign),
    ):
        (out / f"{name}.json").write_text(json.dumps(bundle, indent=1) + "\n")


if __name__ == "__main__":
    generate(VECTORS)
