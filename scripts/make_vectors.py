"""Regenerate tests/vectors/events.json (known-answer event vectors) deterministically.

Run only when the format changes on purpose; tests check the committed file.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.canonical import canonical, envelope_bytes, sha256_hex
from ledger.keys import Signer

# RFC 8032 section 7.1, TEST 1 secret key: a published key, fine for vectors only.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def main() -> None:
    signer = Signer(Ed25519PrivateKey.from_private_bytes(SEED))
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
    path = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "events.json"
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
