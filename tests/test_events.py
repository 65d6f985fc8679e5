"""The vocabulary covers the research's event types, and payloads are checked strictly."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ledger.errors import ValidationError
from ledger.events import CASE_TYPES, VOCABULARY, validate_body
from ledger.refs import pseudonym

RESEARCH = Path(__file__).resolve().parent.parent.parent / "shared" / "domain" / "research.md"


def research_types() -> set[str]:
    text = RESEARCH.read_text(encoding="utf-8")
    section = text.split("**Types**:")[1].split("## Gaps")[0]
    section = re.sub(r"\{[^}]*\}", "", section)  # drop payload hints like {rag}
    found: set[str] = set()
    for token in re.findall(r"\b[A-Z][A-Z0-9_]*[A-Z0-9](?:/[A-Z_]+)*", section):
        head, *alts = token.split("/")
        found.add(head)
        stem = head.rsplit("_", 1)[0]
        for alt in alts:
            found.add(
                alt if "_" in alt and alt.split("_")[0] == head.split("_")[0] else f"{stem}_{alt}"
            )
    return found - {"CPS", "CSC", "LADO"}  # group headings, not types


def test_every_research_type_has_a_payload_model() -> None:
    expected = research_types()
    assert len(expected) > 70
    missing = sorted(expected - CASE_TYPES.keys())
    assert missing == []


def test_nine_groups() -> None:
    assert len(VOCABULARY) == 9


def body(**fields: object) -> dict[str, object]:
    out: dict[str, object] = {
        "v": 1,
        "case_id": "C-1",
        "event_id": "e-1",
        "type": "MASH_TRIAGED",
        "occurred_at": "2024-01-01T10:00:00Z",
        "agency": "mash-a",
        "actor": {"role": "screener"},
        "payload": {"rag": "red"},
        "responds_to": [],
        "corrects": None,
        "key_id": "0" * 32,
    }
    out.update(fields)
    return out


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_valid_body_is_returned_unchanged() -> None:
    b = body()
    assert validate_body(b, NOW) is b


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"payload": {"rag": "purple"}}, "payload.rag"),
        ({"payload": {"rag": "red", "name": "Jane"}}, "payload.name"),
        ({"occurred_at": "2024-01-01 10:00"}, "not a UTC time"),
        ({"occurred_at": "2024-02-30T10:00:00Z"}, "not a real date"),
        (
            {"type": "REFERRAL_RECEIVED", "payload": {"referral_source": "99"}},
            "payload.referral_source",
        ),
        ({"payload": {"rag": "red", "child_ref": "child_" + "A" * 26}}, "payload.child_ref"),
        ({"agency_id": "x"}, "agency_id does not belong"),
        ({"type": "OUTCOME_ASSIGNED", "payload": {"ho_outcome": 99}}, "payload.ho_outcome"),
        ({"occurred_at": "0001-01-01T00:00:00Z"}, "before 1900"),
        ({"occurred_at": "1899-12-31T23:59:59Z"}, "before 1900"),
        # Values pydantic would coerce are refused: the body is stored as sent, so
        # "yes" must not read as true here and as a non-boolean downstream.
        (
            {"type": "DISCLOSURE_RECEIVED", "payload": {"sexual_offence": "yes"}},
            "payload.sexual_offence",
        ),
        (
            {"type": "DISCLOSURE_RECEIVED", "payload": {"sexual_offence": 1}},
            "payload.sexual_offence",
        ),
        ({"payload": {"rag": "red", "child_age": "12"}}, "payload.child_age"),
        ({"payload": {"rag": "red", "child_age": 12.0}}, "payload.child_age"),
        ({"payload": {"rag": "red", "child_age": True}}, "payload.child_age"),
        ({"type": "OUTCOME_ASSIGNED", "payload": {"ho_outcome": "16"}}, "payload.ho_outcome"),
        ({"type": "OUTCOME_ASSIGNED", "payload": {"ho_outcome": 16.0}}, "payload.ho_outcome"),
        ({"v": True}, "body.v"),
    ],
)
def test_invalid_bodies_name_the_field(fields: dict[str, object], needle: str) -> None:
    b = body(**fields)
    with pytest.raises(ValidationError, match=re.escape(needle)):
        validate_body(b, NOW)


def test_exact_values_still_pass() -> None:
    for fields in (
        {"type": "DISCLOSURE_RECEIVED", "payload": {"sexual_offence": True, "child_age": 16}},
        {"type": "OUTCOME_ASSIGNED", "payload": {"ho_outcome": 16}},
        {"occurred_at": "1900-01-01T00:00:00Z"},
    ):
        b = body(**fields)
        assert validate_body(b, NOW) is b


def test_missing_field_is_named() -> None:
    b = body()
    del b["responds_to"]
    with pytest.raises(ValidationError, match="missing field"):
        validate_body(b, NOW)


def test_pseudonyms_are_stable_keyed_and_valid() -> None:
    a = pseudonym("child", "Jane  SMITH 2009-01-02", b"k1")
    assert a == pseudonym("child", "jane smith 2009-01-02", b"k1")
    assert a != pseudonym("child", "jane smith 2009-01-02", b"k2")
    validate_body(body(payload={"rag": "red", "child_ref": a}), NOW)
