"""RFC 8785 canonical bytes and the envelope the ledger stores, hashes and chains.

The writer side of docs/FORMATS.md: bodies are canonicalised once here, signed,
and carried verbatim; `ledger.verify` is the reader side and never needs this.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785

from .errors import ValidationError
from .verify import ENVELOPE_VERSION, b64encode

MAX_SAFE_INTEGER = 2**53 - 1
MAX_FAST_NODES = 1_000_000  # more than a 1 MiB body can hold


# For what orjson refuses. Built once: json.dumps with any option set builds a new
# encoder on every call.
_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _encoder_agrees(value: Any) -> bool:
    """True when the stdlib JSON encoder already yields RFC 8785 bytes for `value`.

    That holds for null, booleans, safe integers, strings, arrays and objects
    whose keys lie below U+10000 (where code-point order and RFC 8785's UTF-16
    order coincide). Floats, which need RFC 8785's number formatting, and
    anything else go to the `rfc8785` library. A loop, not recursion: it runs
    on every appended body. A value that contains itself would loop for ever, so
    past a bound on nodes visited it is left to `rfc8785`, which refuses it.
    """
    todo = [value]
    budget = MAX_FAST_NODES
    while todo:
        budget -= 1
        if budget < 0:
            return False
        item = todo.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return False
        elif kind is dict:
            for k in item:
                if type(k) is not str or not (k.isascii() or max(k) < "\U00010000"):
                    return False
            todo.extend(item.values())
        elif kind is list:
            todo.extend(item)
        else:
            return False
    return True


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value; refuses values JSON cannot carry.

    Bodies on the append path are mostly strings and small integers. For those,
    orjson with sorted keys writes exactly the standard encoder's compact bytes at
    a tenth of its cost (both escape only quote, backslash and control characters,
    the latter as \\b \\f \\n \\r \\t or lowercase \\u00xx, and order keys by
    code point); whatever orjson refuses (nesting past its limit) takes the standard
    encoder. Property tests check both against `rfc8785`, which takes everything else.
    """
    try:
        if _encoder_agrees(value):
            try:
                return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            except orjson.JSONEncodeError:
                return _SORTED.encode(value).encode("utf-8")
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as e:
        raise ValidationError(f"value cannot be canonicalised as JSON: {e}") from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_recorded_at(moment: datetime) -> str:
    """The ledger clock's fixed-width UTC form, so string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope_bytes(
    body_bytes: bytes, sig: bytes, seq: int, recorded_at: str, prev_hash: str | None
) -> bytes:
    """The stored, hashed bytes of one event: RFC 8785 JSON, body carried as a string.

    Written by orjson, which produces exactly the RFC 8785 form for this shape
    (ASCII keys, given in sorted order; integers, null, and strings, which both
    escape only quote, backslash and control characters, the latter as \\b \\f \\n
    \\r \\t or lowercase \\u00xx); tests check it against `rfc8785` on arbitrary text.
    """
    return orjson.dumps(
        {
            "body": body_bytes.decode("utf-8"),
            "prev_hash": prev_hash,
            "recorded_at": recorded_at,
            "seq": seq,
            "sig": b64encode(sig),
            "v": ENVELOPE_VERSION,
        }
    )
