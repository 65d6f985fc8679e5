"""Replay a case as of any instant: chronology, obligations, stall analysis, review flags.

`replay` is a pure function of the case's envelopes, so replaying as of T equals
replaying only the events the ledger held at T. Two senses of "as of": what the
ledger knew (`recorded`) and what had happened (`occurred`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from typing import Any

from .clock import LONDON, days_between, describe
from .obligations import CaseEvent, Obligation, chronological, compute_obligations
from .policy import Policy, load_language_flags
from .verify import Envelope

KIND_LABELS = {
    "police": "Police",
    "csc": "Children's social care",
    "health": "Health",
    "education": "Education",
    "cps": "CPS",
    "la": "Local authority",
    "lado": "LADO",
    "mash": "MASH",
    "vcs": "Voluntary sector",
    "ledger": "Ledger",
}
EPISODE_GAP_DAYS = 14


@lru_cache(maxsize=1024)
def agency_label(agency: str, kind: str) -> str:
    return f"{KIND_LABELS.get(kind, kind)} ({agency})"


def when_text(moment: datetime) -> str:
    return moment.astimezone(LONDON).strftime("%d %b %Y %H:%M")


def date_text(moment: datetime) -> str:
    local = moment.astimezone(LONDON)
    return f"{local.day} {local.strftime('%B %Y')}"


@lru_cache(maxsize=512)
def humanise(event_type: str) -> str:
    return event_type.replace("_", " ").capitalize()


TRIGGER_LABELS = {
    "DISCLOSURE_RECEIVED": "disclosure",
    "INCIDENT_LOGGED": "incident report",
    "REFERRAL_RECEIVED": "referral",
    "REFERRAL_DECISION": "referral decision",
    "MASH_TRIAGED": "MASH triage",
    "FOUND": "child being found after going missing",
    "STRATEGY_DISCUSSION_HELD": "strategy discussion",
    "ICPC_HELD": "initial conference",
    "RCPC_HELD": "review conference",
    "CRIME_RECORDED": "crime being recorded",
    "ARREST": "arrest",
    "BAIL_GRANTED": "grant of bail",
    "FILE_TO_CPS": "file to the CPS",
    "LADO_REFERRAL": "LADO referral",
    "ALLEGATION_RECEIVED": "allegation",
    "SERIOUS_INCIDENT_NOTIFIED": "serious incident notification",
    "CHARGING_DECISION": "charging decision",
    "VRR_REQUESTED": "request for review",
}


def trigger_label(event: CaseEvent) -> str:
    if event.type == "DISCLOSURE_RECEIVED" and event.payload.get("offence"):
        return f"{event.payload['offence']} disclosure"
    return TRIGGER_LABELS.get(event.type, humanise(event.type).lower())


def age_band(age: int | None) -> str:
    if age is None:
        return "unknown"
    if age < 13:
        return "under 13"
    if age < 16:
        return "13-15"
    return "16-17" if age < 18 else "18+"


@dataclass
class Flag:
    kind: str  # language | pattern | victim_as_suspect
    rule: str
    event_id: str | None
    detail: str
    severity: str = "review"
    span: tuple[int, int] | None = None
    text: str | None = None

    @cached_property
    def _dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule": self.rule,
            "event_id": self.event_id,
            "detail": self.detail,
            "severity": self.severity,
            "span": list(self.span) if self.span else None,
            "text": self.text,
        }

    def as_dict(self) -> dict[str, Any]:
        """The flag as JSON data (built once: a flagged case asks for it repeatedly)."""
        return self._dict


@dataclass
class Replay:
    case_id: str
    as_of: datetime
    basis: str
    policy_id: str
    policy_hash: str
    events: list[CaseEvent]
    obligations: list[Obligation]
    flags: list[Flag]
    chronology: list[dict[str, Any]] = field(default_factory=list)
    stall: dict[str, Any] = field(default_factory=dict)
    explicit: bool = False  # an as-of instant was asked for
    kinds: Mapping[str, str] = field(default_factory=dict)  # agency -> kind, as replayed


def replay(
    case_id: str,
    envelopes: Sequence[Envelope],
    kinds: Mapping[str, str],
    policy: Policy,
    as_of: datetime | None = None,
    basis: str = "recorded",
    lexicon: list[dict[str, Any]] | None = None,
    narrative: Mapping[str, Mapping[str, str]] | None = None,
) -> Replay:
    """`narrative` holds the vaulted texts the reader may see, by event id and field."""
    explicit = as_of is not None
    as_of = as_of or datetime.now(UTC)
    # What the ledger knew by `as_of` (recorded), or what had happened by then (occurred).
    events = [CaseEvent.from_envelope(e, kinds, narrative) for e in envelopes]
    if basis == "recorded":
        events = chronological(e for e in events if e.recorded <= as_of)
    else:
        events = chronological(e for e in events if e.occurred <= as_of)
    obligations = compute_obligations(events, policy, as_of)
    flags = language_flags(events, lexicon if lexicon is not None else load_language_flags())
    flags += pattern_flags(events, policy) + victim_as_suspect(events)
    result = Replay(
        case_id,
        as_of,
        basis,
        policy.id,
        policy.hash,
        events,
        obligations,
        flags,
        explicit=explicit,
        kinds=kinds,
    )
    result.chronology = chronology(events, flags)
    result.stall = stall_analysis(events, obligations, as_of, explicit)
    return result


def chronology(events: Sequence[CaseEvent], flags: Sequence[Flag]) -> list[dict[str, Any]]:
    """Rows in the standard multi-agency chronology columns."""
    corrected_by: dict[str, str] = {e.corrects: e.event_id for e in events if e.corrects}
    flagged: dict[str, list[Flag]] = {}
    for f in flags:
        if f.event_id:
            flagged.setdefault(f.event_id, []).append(f)
    rows = []
    for e in events:
        p = e.payload
        source = p.get("referral_source") or p.get("basis") or p.get("from_agency") or ""
        outcome = next(
            (
                str(p[k])
                for k in ("outcome", "decision", "reason", "ho_outcome", "rag", "ground")
                if p.get(k) is not None
            ),
            "",
        )
        maker = (p.get("decision_maker") or {}).get("role") or e.actor.get("role", "")
        action = p.get("rationale") or ""
        rows.append(
            {
                "seq": e.seq,
                "event_id": e.event_id,
                "occurred_at": e.occurred.isoformat(),
                "date_time": when_text(e.occurred),
                "agency": e.agency,
                "agency_label": agency_label(e.agency, e.agency_kind),
                "source": str(source),
                "event": humanise(e.type) + (f": {p['summary']}" if p.get("summary") else ""),
                "type": e.type,
                "action": action,
                "outcome": outcome,
                "decision_maker": maker,
                "responds_to": list(e.responds_to),
                "corrects": e.corrects,
                "corrected_by": corrected_by.get(e.event_id),
                "correction": p.get("replacement") if e.corrects else None,
                "flags": [f.as_dict() for f in flagged.get(e.event_id, [])],
                "recorded_at": e.recorded.isoformat(),
            }
        )
    return rows


def outstanding_until(
    ob: Obligation, events: Sequence[CaseEvent], as_of: datetime, explicit: bool
) -> datetime:
    """How far an undone obligation is counted: to the replay instant if one was asked
    for, else to the case's latest record if that came after the deadline."""
    if explicit or not events or events[-1].occurred <= ob.due:
        return as_of
    return events[-1].occurred


def obligation_dict(ob: Obligation, end: datetime) -> dict[str, Any]:
    late = ob.late_by_days()
    return {
        "rule": ob.rule.id,
        "title": ob.rule.title,
        "status": ob.status,
        "owing_agency": ob.owing_agency,
        "trigger_event_id": ob.trigger.event_id,
        "trigger_type": ob.trigger.type,
        "start": ob.start.isoformat(),
        "due": ob.due.isoformat(),
        "deadline": describe(ob.period.value, ob.period.clock),
        "discharged_at": ob.discharged_at.isoformat() if ob.discharged_at else None,
        "discharged_by": ob.discharged_by,
        "late_days": round(late, 2) if late else None,
        "outstanding_days": days_between(ob.trigger.occurred, end)
        if ob.status == "breached"
        else None,
        "retrospective": ob.retrospective,
        "source": ob.rule.source,
        "rule_status": ob.rule.status,
    }


def stall_sentence(ob: Obligation, kind: str | None, end: datetime) -> str:
    if kind is None:  # no agency of the owing kind appears in the case
        who = f"{KIND_LABELS.get(ob.owing_agency, ob.owing_agency)} (no agency on record)"
    else:
        who = f"{KIND_LABELS.get(kind, kind)} ({ob.owing_agency})"
    head = (
        f"{who} {ob.rule.failure} within "
        f"{describe(ob.period.value, ob.period.clock)} of the {trigger_label(ob.trigger)} on "
        f"{date_text(ob.trigger.occurred)}"
    )
    if ob.status == "met_late":
        late = days_between(ob.due, ob.discharged_at or ob.due)
        return f"{head}: done {late} day{'s' if late != 1 else ''} late"
    days = days_between(ob.trigger.occurred, end)
    return f"{head}: never done ({days} days)"


def stall_analysis(
    events: Sequence[CaseEvent], obligations: Sequence[Obligation], as_of: datetime, explicit: bool
) -> dict[str, Any]:
    kinds = {e.agency: e.agency_kind for e in events}
    failed = sorted(
        (o for o in obligations if o.status in ("breached", "met_late")),
        key=lambda o: (o.due, o.rule.id),
    )
    first = failed[0] if failed else None
    silence: dict[str, Any] | None = None
    for a, b in itertools.pairwise(events):
        gap = (b.occurred - a.occurred).total_seconds() / 86400
        if silence is None or gap > silence["days"]:
            silence = {
                "from_event": a.event_id,
                "to_event": b.event_id,
                "days": round(gap, 1),
                "from": a.occurred.isoformat(),
                "to": b.occurred.isoformat(),
            }
    delays: dict[str, dict[str, Any]] = {}
    for o in obligations:
        d: dict[str, Any] = delays.setdefault(
            o.owing_agency,
            {
                "agency": o.owing_agency,
                "owed": 0,
                "met": 0,
                "met_late": 0,
                "breached": 0,
                "open": 0,
                "days_late": 0.0,
            },
        )
        d["owed"] += 1
        if o.status in d:
            d[o.status] += 1
        d["days_late"] = round(d["days_late"] + (o.late_by_days() or 0.0), 2)
    episodes: list[dict[str, Any]] = []
    ends: list[datetime] = []  # each episode's last event, formatted once at the end
    for e in events:
        if not ends or (e.occurred - ends[-1]).days > EPISODE_GAP_DAYS:
            episodes.append(
                {
                    "start": e.occurred.isoformat(),
                    "first_event": humanise(e.type),
                    "events": 0,
                    "agencies": [],
                }
            )
            ends.append(e.occurred)
        ep = episodes[-1]
        ends[-1], ep["events"] = e.occurred, ep["events"] + 1
        if e.agency not in ep["agencies"]:
            ep["agencies"].append(e.agency)
    for ep, last in zip(episodes, ends, strict=True):
        ep["end"] = last.isoformat()
    end = None if first is None else outstanding_until(first, events, as_of, explicit)
    return {
        "first_stall": None
        if first is None or end is None
        else {
            **obligation_dict(first, end),
            "sentence": stall_sentence(first, kinds.get(first.owing_agency), end),
        },
        "longest_silence": silence,
        "agency_delays": sorted(delays.values(), key=lambda d: -d["breached"] - d["met_late"]),
        "episodes": episodes,
    }


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


@lru_cache(maxsize=16)
def _prepared(
    terms: tuple[tuple[str, int | None, bool, str], ...],
) -> list[tuple[re.Pattern[str], str, int | None, bool, str]]:
    return [(_compiled(p), p, limit, bool(when), source) for p, limit, when, source in terms]


def language_flags(events: Sequence[CaseEvent], lexicon: list[dict[str, Any]]) -> list[Flag]:
    """Victim-blaming language in decision rationales, for a human to review."""
    terms = _prepared(
        tuple(
            (t["pattern"], t.get("age_lt"), bool(t.get("when")), str(t.get("source", "")))
            for t in lexicon
        )
    )
    flags: list[Flag] = []
    child_age: int | None = None
    applicable: dict[int | None, list[Any]] = {}  # terms that apply at each age, built once
    for e in events:
        age = e.payload.get("child_age")
        if isinstance(age, int):
            child_age = age
        text = e.payload.get("rationale")
        if not isinstance(text, str):
            continue
        if child_age not in applicable:
            applicable[child_age] = [
                t
                for t in terms
                if not (t[2] is not None and child_age is not None and child_age >= t[2])
                and not (t[3] and (child_age is None or child_age >= 18))
            ]
        for pattern, name, limit, _conditional, source in applicable[child_age]:
            for m in pattern.finditer(text):
                severe = child_age is not None and (
                    child_age < 16 or (limit is not None and child_age < limit)
                )
                flags.append(
                    Flag(
                        "language",
                        name,
                        e.event_id,
                        f"'{m.group(0)}' in the rationale "
                        f"(child's age band {age_band(child_age)}); "
                        f"source: {source}",
                        "high" if severe else "medium",
                        (m.start(), m.end()),
                        m.group(0),
                    )
                )
    return flags


def pattern_flags(events: Sequence[CaseEvent], policy: Policy) -> list[Flag]:
    from .clock import add_months, local_date

    flags: list[Flag] = []
    factors = {f for e in events for f in e.payload.get("factors", []) or []}
    for pattern in policy.document.patterns:
        hits = [
            e
            for e in events
            if e.type in pattern.counts
            and (pattern.condition is None or pattern.condition(dict(e.payload)))
        ]
        if pattern.factors and not factors & set(pattern.factors):
            continue
        for i, e in enumerate(hits):
            window_end = add_months(local_date(e.occurred), pattern.window_months)
            inside = [h for h in hits[i:] if local_date(h.occurred) <= window_end]
            if len(inside) >= pattern.threshold:
                flags.append(
                    Flag(
                        "pattern",
                        pattern.id,
                        inside[-1].event_id,
                        f"{pattern.title}: {len(inside)} between "
                        f"{date_text(inside[0].occurred)} and "
                        f"{date_text(inside[-1].occurred)}",
                    )
                )
                break
    return flags


def victim_as_suspect(events: Sequence[CaseEvent]) -> list[Flag]:
    """A child who is a victim in the case recorded as a suspect or arrested as one."""
    victims = {e.payload.get("child_ref") for e in events if e.payload.get("child_ref")}
    victims |= {
        p["ref"]
        for e in events
        for p in e.payload.get("person_refs", []) or []
        if p.get("role") == "victim"
    }
    flags = []
    for e in events:
        suspect = None
        if e.type == "ARREST" and e.payload.get("as_role") == "suspect":
            suspect = e.payload.get("person_ref")
        elif e.type == "SUSPECT_IDENTIFIED":
            suspect = e.payload.get("suspect_ref")
        if suspect in victims:
            flags.append(
                Flag(
                    "victim_as_suspect",
                    "HMICFRS-2023",
                    e.event_id,
                    f"{humanise(e.type)} names {suspect}, a child victim in this case",
                    "high",
                )
            )
    return flags
