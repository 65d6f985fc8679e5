"""Evidence bundles: one case, self-contained, verifiable offline with only the log key.

A bundle holds the case's events, the registry events that establish every
signing key it uses (and the ledger's genesis), a signed checkpoint with its
cosignatures, and an inclusion proof for each entry. `ledger.verify.verify_bundle`
checks it with the standard library and `cryptography` alone.
"""

from __future__ import annotations

from typing import Any

from .core import Ledger
from .verify import BUNDLE_FORMAT, LEDGER_STREAM, b64encode, stream_id


def export_bundle(ledger: Ledger, case_id: str) -> dict[str, Any]:
    """Checkpoint the log, then gather the case and its keys with proofs at that size."""
    case = ledger.case_envelopes(case_id)
    note = ledger.checkpoint()
    size = int(note.split("\n")[1])
    streams = [LEDGER_STREAM]
    for agency in sorted({e.agency for e in case} - {"ledger"}):
        streams.append(f"agency/{agency}")
    entries: list[dict[str, Any]] = []
    log = ledger.log
    envelopes = [env for s in streams for env in ledger.stream_envelopes(s)] + case
    proofs = log.proofs_at([env.event_hash for env in envelopes], size)
    for env in envelopes:
        if env.event_hash not in proofs:
            continue  # recorded after this checkpoint (a registry change since)
        index, hashes = proofs[env.event_hash]
        entries.append(
            {
                "stream": env.stream,
                "seq": env.seq,
                "bytes": b64encode(env.raw),  # the stored canonical bytes
                "leaf_index": index,
                "inclusion": [b64encode(h) for h in hashes],
            }
        )
    return {
        "format": BUNDLE_FORMAT,
        "case_id": case_id,
        "stream_id": str(stream_id(f"case/{case_id}")),
        "log": {"origin": ledger.origin(), "verifier_key": ledger.log_verifier().encode()},
        "checkpoint": log.note_at(size),
        "tree_size": size,
        "entries": entries,
    }
