"""Pseudonymous references: keyed HMAC-SHA-256 over a normalised identifier.

The same child, person, vehicle or place gets the same reference across
agencies and boroughs, without the reference revealing who or what it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

KINDS = ("child", "person", "staff", "vehicle", "place", "phone")
# A reference: its kind, then 26 lowercase base32 characters of the keyed HMAC.
REF_BODY = rf"(?:{'|'.join(KINDS)})_[a-z2-7]{{26}}"
REF_RE = re.compile(rf"\b{REF_BODY}\b")


def normalise(identifier: str) -> str:
    return " ".join(identifier.casefold().split())


def pseudonym(kind: str, identifier: str, linkage_key: bytes) -> str:
    """`kind_` + 26 base32 characters (130 bits) of HMAC over kind and identifier."""
    if kind not in KINDS:
        raise ValueError(f"reference kind {kind!r} is not one of {', '.join(KINDS)}")
    mac = hmac.new(linkage_key, f"{kind}\x00{normalise(identifier)}".encode(), hashlib.sha256)
    return f"{kind}_{base64.b32encode(mac.digest()).decode('ascii').lower()[:26]}"
