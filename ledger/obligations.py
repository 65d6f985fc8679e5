"""Obligations: what each agency owed in a case, by when, and whether it was done.

Pure functions over a case's events and a policy, so the live sweep and a replay
as of any instant give the same answer. Times are `occurred_at` (when things
happened in the world), so historic records imported years later are judged by
when they happened; an obligation that fell due before the ledger learned of its
trigger is marked retrospective.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .canonical import format_recorded_at
from .clock import deadline
from .policy import Period, Policy, Rule
from .verify import Envelope

SEALED = "[sealed]"  # narrative committed in the chain, not shown to this reader


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class CaseEvent:
    """One event as the obligation and replay logic sees it."""

    seq: int
    event_id: str
    type: str
    agency: str
    agency_kind: str
    occurred: datetime
    recorded: datetime
    payload: Mapping[str, Any]
    responds_to: tuple[str, ...]
    corrects: str | None
    actor: Mapping[str, Any]

    @classmethod
    def from_envelope(
        cls,
        env: Envelope,
        kinds: Mapping[str, str],
        narrative: Mapping[str, Mapping[str, str]] | None = None,
    ) -> CaseEvent:
        """The event, its committed narrative fields filled from `narrative` where the
        reader may see them and shown as "[sealed]" where not."""
        body = env.body
        payload = body["payload"]
        committed = body.get("narrative")
        texts = narrative.get(env.event_id) if narrative else None
        if committed or texts:
            payload = {**payload, **{f: SEALED for f in committed or ()}, **(texts or {})}
        return cls(
            seq=env.seq,
            event_id=env.event_id,
            type=env.type,
            agency=env.agency,
            agency_kind=kinds.get(env.agency, "ledger" if env.agency == "ledger" else "unknown"),
            occurred=parse_instant(body["occurred_at"]),
            recorded=parse_instant(env.recorded_at),
            payload=payload,
            responds_to=tuple(body["responds_to"]),
            corrects=body["corrects"],
            actor=body["actor"],
        )


def chronological(events: Iterable[CaseEvent]) -> list[CaseEvent]:
    return sorted(events, key=lambda e: (e.occurred, e.seq))


def case_obligations(
    envelopes: Iterable[Envelope], kinds: Mapping[str, str], policy: Policy, as_of: datetime
) -> tuple[list[CaseEvent], list[Obligation]]:
    """What the ledger knew of a case at `as_of` (in occurred order) and the obligations
    it opens: the part of a replay that listings, statistics and the sweep need, without
    the chronology, flags and stall analysis."""
    known_by = format_recorded_at(as_of)
    events = chronological(
        CaseEvent.from_envelope(e, kinds) for e in envelopes if e.recorded_at <= known_by
    )
    return events, compute_obligations(events, policy, as_of)


@dataclass
class Obligation:
    rule: Rule
    trigger: CaseEvent
    owing_agency: str
    start: datetime
    due: datetime
    period: Period
    satisfied: dict[str, CaseEvent] = field(default_factory=dict)
    discharged_at: datetime | None = None
    ended_by: CaseEvent | None = None
    status: str = "open"

    @property
    def retrospective(self) -> bool:
        """Due before the ledger knew of the trigger (a historic record)."""
        return self.due < self.trigger.recorded

    @property
    def discharged_by(self) -> list[str]:
        return [e.event_id for e in self.satisfied.values()]

    def late_by_days(self) -> float | None:
        if self.discharged_at is None or self.discharged_at <= self.due:
            return None
        return (self.discharged_at - self.due).total_seconds() / 86400


def _context(event: CaseEvent, child_age: int | None) -> dict[str, Any]:
    ctx = dict(event.payload)
    ctx["agency_kind"] = event.agency_kind
    ctx["type"] = event.type
    if ctx.get("child_age") is None:
        ctx["child_age"] = child_age
    return ctx


def _owing(rule: Rule, trigger: CaseEvent, case_agencies: Mapping[str, str]) -> str:
    """The agency that owes the response: the trigger's own if it is of an owing kind,
    else the case's agency of the first owing kind, else the kind itself."""
    if trigger.agency_kind in rule.owing:
        return trigger.agency
    for kind in rule.owing:
        for agency, agency_kind in case_agencies.items():
            if agency_kind == kind:
                return agency
    return rule.owing[0]


def compute_obligations(
    events: Sequence[CaseEvent], policy: Policy, as_of: datetime
) -> list[Obligation]:
    """Every obligation the events open, with its status at `as_of`."""
    ordered = chronological(events)
    by_id = {e.event_id: e for e in ordered}
    case_agencies = {e.agency: e.agency_kind for e in ordered}
    child_age: int | None = None
    obligations: list[Obligation] = []
    open_by_rule: dict[str, list[Obligation]] = {}

    def open_obligation(rule: Rule, trigger: CaseEvent, start: datetime, owing: str) -> None:
        period = rule.period(_context(trigger, child_age))
        ob = Obligation(
            rule, trigger, owing, start, deadline(start, period.value, period.clock), period
        )
        obligations.append(ob)
        open_by_rule.setdefault(rule.id, []).append(ob)

    for event in ordered:
        age = event.payload.get("child_age")
        if isinstance(age, int):
            child_age = age
        # A satisfying event later in the case discharges an open obligation, whether
        # or not it names the trigger in responds_to (a link only makes it explicit).
        for rule in policy.by_satisfier.get(event.type, ()):
            for ob in list(open_by_rule.get(rule.id, ())):
                if event is ob.trigger or event.occurred < ob.trigger.occurred:
                    continue
                ob.satisfied.setdefault(event.type, event)
                needed = rule.satisfied_by if rule.require_all else [event.type]
                if all(t in ob.satisfied for t in needed):
                    ob.discharged_at = max(e.occurred for e in ob.satisfied.values())
                    open_by_rule[rule.id].remove(ob)
                    if rule.recurring and not open_by_rule[rule.id]:
                        open_obligation(rule, event, event.occurred, ob.owing_agency)
        for rule in policy.by_until.get(event.type, ()):
            for ob in open_by_rule.pop(rule.id, []):
                ob.ended_by = event
        for rule in policy.by_trigger.get(event.type, ()):
            ctx = _context(event, child_age)
            if rule.condition is not None and not rule.condition(ctx):
                continue
            start = event.occurred
            if rule.clock_from == "responds_to":
                earlier = [by_id[r].occurred for r in event.responds_to if r in by_id]
                start = min(earlier) if earlier else start
            if rule.clock_from == "latest_trigger":
                for stale in open_by_rule.pop(rule.id, []):
                    obligations.remove(stale)
            open_obligation(rule, event, start, _owing(rule, event, case_agencies))
    for ob in obligations:
        ob.status = _status(ob, as_of)
    return obligations


def _status(ob: Obligation, as_of: datetime) -> str:
    if ob.ended_by is not None:
        return "ended"
    if ob.discharged_at is not None:
        return "met" if ob.discharged_at <= ob.due else "met_late"
    return "breached" if ob.due < as_of else "open"
