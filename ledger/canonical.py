"""RFC 8785 canonical bytes and the envelope the ledger stores, hashes and chains.

The writer side of docs/FORMATS.md: bodies are canonicalised once here, signed,
and carried verbatim; `ledger.verify` is the reader side and never needs this.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import rfc8785

from .errors import ValidationError
from .verify import ENVELOPE_VERSION, b64encode


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value; refuses values JSON cannot carry."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise ValidationError(f"value cannot be canonicalised as JSON: {e}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_recorded_at(moment: datetime) -> str:
    """The ledger clock's fixed-width UTC form, so string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope_bytes(
    body_bytes: bytes, sig: bytes, seq: int, recorded_at: str, prev_hash: str | None
) -> bytes:
    """The stored, hashed bytes of one event (canonical JSON, body as a string)."""
    return canonical(
        {
            "v": ENVELOPE_VERSION,
            "body": body_bytes.decode("utf-8"),
            "sig": b64encode(sig),
            "seq": seq,
            "recorded_at": recorded_at,
            "prev_hash": prev_hash,
        }
    )
