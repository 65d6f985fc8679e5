"""Every response standard fires when nothing happens, and is discharged by a timely response."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.errors import UsageError
from ledger.obligations import CaseEvent, Obligation, compute_obligations
from ledger.policy import load_policy

POLICY = load_policy()
START = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)  # a Monday with no bank holiday near

# What each rule's trigger needs for its `when` condition to hold.
TRIGGER_PAYLOADS: dict[str, dict[str, Any]] = {
    "RS02": {"decision": "strategy"},
    "RS03": {"decision": "strategy"},
    "RS04": {"outcome": "s47_joint"},
    "RS05": {"outcome": "cp_plan"},
    "RS06": {"outcome": "cp_plan"},
    "RS07": {"outcome": "plan_continues"},
    "RS08": {"cp_plan_active": True},
    "RS10": {"sexual_offence": True},
    "RS19": {"kind": "serious_harm_or_death"},
    "RS23": {"rag": "amber"},
    "RS24": {"decision": "strategy"},
}


def event(
    n: int,
    event_type: str,
    at: datetime,
    kind: str,
    payload: dict[str, Any] | None = None,
    responds_to: tuple[str, ...] = (),
) -> CaseEvent:
    return CaseEvent(
        n,
        f"e{n}",
        event_type,
        f"{kind}-agency",
        kind,
        at,
        at,
        payload or {},
        responds_to,
        None,
        {"role": "x"},
    )


def trigger_events(rule_id: str) -> list[CaseEvent]:
    rule = next(r for r in POLICY.document.rules if r.id == rule_id)
    kind = rule.owing[0]
    events = []
    responds: tuple[str, ...] = ()
    if rule.clock_from == "responds_to":
        events.append(event(0, "REFERRAL_RECEIVED", START, "csc", {"referral_source": "6"}))
        responds = ("e0",)
    events.append(event(1, rule.trigger[0], START, kind, TRIGGER_PAYLOADS.get(rule_id), responds))
    return events


def the_obligation(events: list[CaseEvent], rule_id: str, as_of: datetime) -> Obligation:
    found = [
        o
        for o in compute_obligations(events, POLICY, as_of)
        if o.rule.id == rule_id and o.trigger.event_id == "e1"
    ]
    assert len(found) == 1, f"{rule_id} did not fire exactly once"
    return found[0]


RULES = [r.id for r in POLICY.document.rules]


def test_every_research_rule_is_in_the_policy() -> None:
    assert [f"RS{n:02d}" for n in range(1, 25)] == RULES
    assert [p.id for p in POLICY.document.patterns] == ["P1", "P2"]
    assert all(r.source and r.status for r in POLICY.document.rules)


@pytest.mark.parametrize("rule_id", RULES)
def test_rule_fires_when_nothing_happens(rule_id: str) -> None:
    events = trigger_events(rule_id)
    ob = the_obligation(events, rule_id, START)
    assert ob.status == "open"
    after = the_obligation(events, rule_id, ob.due + timedelta(minutes=1))
    assert after.status == "breached"


@pytest.mark.parametrize("rule_id", RULES)
def test_rule_is_discharged_by_a_response_in_time(rule_id: str) -> None:
    events = trigger_events(rule_id)
    ob = the_obligation(events, rule_id, START)
    rule = ob.rule
    types = rule.satisfied_by if rule.require_all else rule.satisfied_by[:1]
    respond_at = ob.due - timedelta(minutes=5)
    responses = [
        event(10 + i, t, respond_at, rule.owing[0], {}, ("e1",)) for i, t in enumerate(types)
    ]
    met = the_obligation(events + responses, rule_id, ob.due + timedelta(days=1))
    assert met.status == "met", met
    late = [
        event(10 + i, t, ob.due + timedelta(hours=2), rule.owing[0], {}, ("e1",))
        for i, t in enumerate(types)
    ]
    assert the_obligation(events + late, rule_id, ob.due + timedelta(days=1)).status == "met_late"


def test_rs12_is_next_working_day_for_a_child_victim() -> None:
    child = [event(1, "ARREST", START, "police", {"child_age": 15})]
    adult = [event(1, "ARREST", START, "police", {"child_age": 19})]
    assert (the_obligation(child, "RS12", START).due.date() - START.date()).days == 1
    assert (the_obligation(adult, "RS12", START).due.date() - START.date()).days == 7


def test_rs23_deadline_follows_the_rag_rating() -> None:
    red = [event(1, "MASH_TRIAGED", START, "mash", {"rag": "red"})]
    green = [event(1, "MASH_TRIAGED", START, "mash", {"rag": "green"})]
    assert the_obligation(red, "RS23", START).due == START + timedelta(hours=4)
    assert the_obligation(green, "RS23", START).due == START + timedelta(hours=72)


def test_conditions_that_do_not_hold_open_nothing() -> None:
    events = [event(1, "DISCLOSURE_RECEIVED", START, "csc", {"sexual_offence": True})]
    assert not [o for o in compute_obligations(events, POLICY, START) if o.rule.id == "RS10"]


def test_historic_obligation_is_retrospective() -> None:
    old = datetime(2019, 1, 7, 10, 0, tzinfo=UTC)
    e = CaseEvent(1, "e1", "FOUND", "la-agency", "la", old, START, {}, (), None, {})
    ob = the_obligation([e], "RS09", START)
    assert ob.status == "breached" and ob.retrospective


def test_policy_naming_an_unknown_event_type_is_refused(tmp_path: Any) -> None:
    text = POLICY_TEXT.replace("trigger: [FOUND]", "trigger: [FOUNDD]")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=r"rule RS09, field trigger.*unknown event type 'FOUNDD'"):
        load_policy(path)
    path.write_text(POLICY_TEXT.replace('when: "outcome == cp_plan"', 'when: "outcome =="', 1))
    with pytest.raises(UsageError, match="RS05"):
        load_policy(path)


POLICY_TEXT = __import__("ledger.policy", fromlist=["DEFAULT_POLICY"]).DEFAULT_POLICY.read_text()
