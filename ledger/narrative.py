"""Free-text narrative (rationales, summaries): committed in the chain, sealed in the vault.

A decision's rationale may name a child, an address or a suspect, so its text never
enters a chained event. The submitter moves it out of the payload into a salted
commitment (body version 2, `narrative`) and sends the text and salt beside the
signed body; the ledger checks each commitment, seals text and salt under the case's
narrative key and stores the ciphertext in the same transaction as the event.
Destroying the case key leaves the commitments, and every signature and proof over
them, intact while nothing can recover the words.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .canonical import canonical
from .errors import ValidationError
from .verify import NARRATIVE_FIELDS, narrative_commitment

if TYPE_CHECKING:
    from .keys import Signer

MASK = "[masked]"


class NarrativeText(NamedTuple):  # a tuple: a replay decrypts a thousand at a time
    """One field's words and the salt its commitment was made with."""

    text: str
    salt: bytes

    def commitment(self, field_name: str) -> str:
        return narrative_commitment(field_name, self.text, self.salt)

    def wire(self) -> dict[str, str]:
        return {"text": self.text, "salt": base64.b64encode(self.salt).decode()}


def seal_body(
    body: Mapping[str, Any], salt_key: bytes | None = None
) -> tuple[dict[str, Any], dict[str, NarrativeText]]:
    """A draft body made fit to sign: its free text moved out into commitments.

    Returns the version 2 body and the texts to send beside it. A draft with no
    narrative still becomes version 2, without the `narrative` member. Salts are
    random, or derived from the submitter's secret `salt_key` so that sealing the
    same draft again gives the same body (an idempotent retry, not a conflict).
    """
    if not isinstance(body.get("payload") or {}, dict):
        raise ValidationError("body.payload must be an object")
    payload = dict(body.get("payload") or {})
    texts: dict[str, NarrativeText] = {}
    for name in NARRATIVE_FIELDS:
        text = payload.pop(name, None)
        if text is not None:
            text = str(text)
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError(f"payload.{name} is not valid Unicode") from None
            if salt_key is None:
                salt = os.urandom(32)
            else:
                label = f"{body.get('event_id')}\x00{name}\x00{text}".encode()
                salt = hmac.new(salt_key, label, hashlib.sha256).digest()
            texts[name] = NarrativeText(text, salt)
    out = {**body, "v": 2, "payload": payload}
    out.pop("narrative", None)
    if texts:
        out["narrative"] = {name: t.commitment(name) for name, t in texts.items()}
    return out, texts


class SignedDraft(NamedTuple):
    body: dict[str, Any]
    body_bytes: bytes
    sig: bytes
    texts: dict[str, NarrativeText]


def sign_draft(draft: Mapping[str, Any], signer: Signer) -> SignedDraft:
    """A draft body sealed (its free text into commitments, version 2) and signed: what
    an agency sends, whether through the client or to a local ledger."""
    body, texts = seal_body({**draft, "key_id": signer.key_id}, signer.salt_key)
    body_bytes = canonical(body)
    return SignedDraft(body, body_bytes, signer.sign_body(body_bytes), texts)


def wire(texts: Mapping[str, NarrativeText]) -> dict[str, dict[str, str]]:
    return {name: t.wire() for name, t in texts.items()}


def from_wire(event_id: str, raw: Any) -> dict[str, NarrativeText]:
    """Parse the texts sent beside a body (`{"rationale": {"text", "salt"}}`)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(f"event {event_id}: narrative must be an object of fields")
    out: dict[str, NarrativeText] = {}
    for name, item in raw.items():
        where = f"event {event_id}: narrative.{name}"
        if name not in NARRATIVE_FIELDS:
            known = ", ".join(NARRATIVE_FIELDS)
            raise ValidationError(f"{where} is not a narrative field ({known})")
        if not isinstance(item, dict) or set(item) != {"text", "salt"}:
            raise ValidationError(f"{where} must be an object with 'text' and 'salt'")
        text, salt = item["text"], item["salt"]
        if not isinstance(text, str) or len(text) > 8000:
            raise ValidationError(f"{where}.text must be a string of at most 8000 characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{where}.text is not valid Unicode (a lone surrogate)") from None
        try:
            raw_salt = base64.b64decode(str(salt), validate=True)
        except (binascii.Error, ValueError):
            raw_salt = b""
        if len(raw_salt) != 32:
            raise ValidationError(f"{where}.salt must be 32 bytes in standard base64")
        out[name] = NarrativeText(text, raw_salt)
    return out


def check(body: Mapping[str, Any], texts: Mapping[str, NarrativeText]) -> None:
    """Every committed field arrived with the text it commits to, and nothing else did."""
    committed: Mapping[str, str] = body.get("narrative") or {}
    where = f"event {body.get('event_id')}"
    if not isinstance(committed, dict):
        raise ValidationError(f"{where}: narrative must be an object of commitments")
    for name in texts.keys() - committed.keys():
        raise ValidationError(f"{where}: narrative.{name} was sent but the body commits to none")
    for name, commitment in committed.items():
        if name not in texts:
            raise ValidationError(
                f"{where}: the body commits to narrative.{name} but its text was not sent"
            )
        if texts[name].commitment(name) != commitment:
            raise ValidationError(
                f"{where}: narrative.{name} does not match its commitment in the signed body"
            )


# Identifiers a panel must not see in narrative, beyond the names the vault holds.
_PATTERNS = (
    re.compile(r"\b[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}\b"),  # UK postcode
    re.compile(r"\b(?:\+44\s?|0)(?:\d\s?){9,10}\b"),  # UK phone number
    re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),  # email address
    re.compile(r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b|\b\d{4}-\d{2}-\d{2}\b"),  # dates
    re.compile(  # dates in words: 29 Feb 2008, 29th February 2008, February 29, 2008
        r"\b\d{1,2}(?:st|nd|rd|th)? (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)"
        r"[a-z]*,? \d{4}\b|\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]* "
        r"\d{1,2}(?:st|nd|rd|th)?,? \d{4}\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b[A-Z]{2}[0-9]{2} ?[A-Z]{3}\b"),  # current-style vehicle registration
    re.compile(  # a house number and street
        r"\b\d{1,4}[A-Za-z]?,? (?:[A-Z][\w'-]+ ){1,3}(?:Road|Rd|Street|St|Lane|Ln|Avenue|Ave|"
        r"Mews|Close|Court|Ct|Drive|Dr|Way|Place|Gardens|Terrace|Crescent|Grove|Hill|Square|"
        r"Walk|Row|Park|Rise|Estate|House|Tower|Towers)\b"
    ),
)


# A term is (words, whether to match in any case). Whole names and addresses are matched in
# any case; a single part of a name only as written (capitalised), since "Will" and
# "Young" are also words.
Term = tuple[str, bool]


def identifying_terms(name: str, address: str | None) -> list[Term]:
    """What of a person's vault record a panel must not see in narrative: the whole name,
    each part of it (and of a hyphenated part), the address and its first line."""
    parts = [p for word in name.split() for p in (word, *word.split("-"))]
    return _unique([(name, True), *((p, False) for p in parts), *_address_terms(address)])


def erasure_terms(name: str, address: str | None) -> list[Term]:
    """The narrower terms by which erasing a person destroys a narrative text: the whole
    name, the surname as written and the address. A first name alone does not destroy a
    text ("Will", "May" and "Rose" are words too); it stays masked from panels while the
    person is in the vault."""
    words = name.split()
    surname = [(p, False) for p in (words[-1], *words[-1].split("-"))] if len(words) > 1 else []
    return _unique([(name, True), *surname, *_address_terms(address)])


def _address_terms(address: str | None) -> list[Term]:
    address = (address or "").strip()
    return [(address, True), (address.split(",")[0], True)] if address else []


def _unique(terms: list[Term]) -> list[Term]:
    out: dict[str, bool] = {}
    for term, any_case in terms:
        term = term.strip()
        if len(term) >= 3 and (term not in out or any_case):
            out[term] = any_case
    return list(out.items())


def _word(term: str, any_case: bool = True) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(term)}(?!\w)", re.IGNORECASE if any_case else 0)


def names_any(text: str, terms: Iterable[Term]) -> bool:
    """Whether the text names any of the terms (whole words)."""
    return any(_word(t, any_case).search(text) for t, any_case in terms)


def mask(text: str, names: Mapping[Term, str]) -> str:
    """Narrative with identifiers replaced: patterns, then known names (whole words,
    longest first) by their label."""
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    for term, any_case in sorted(names, key=lambda t: len(t[0]), reverse=True):
        text = _word(term, any_case).sub(names[(term, any_case)], text)
    return text
