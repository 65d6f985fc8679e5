"""Publication and linkage: what an inquiry can publish, and cases that may be connected.

Publication follows the Sexual Offences (Amendment) Act 1992 and the ICO's motivated-
intruder test as the research describes them: dates to the month, people as "Child A",
"Adult 1", narrative withheld, and counts of 1 to 5 shown as "c" (as DfE statistics do).
Link suggestions are prompts for a person: cases in different boroughs that share a
suspect, vehicle or place reference. A confirmation or rejection is itself a ledger event.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .clock import LONDON
from .errors import Conflict, NotFound, UsageError
from .obligations import CaseEvent, case_obligations
from .refs import REF_RE
from .replay import Replay, humanise

if TYPE_CHECKING:
    from .core import Ledger, Receipt
    from .policy import Policy

LABELS = {
    "child": ("Child", "letter"),
    "person": ("Adult", "number"),
    "staff": ("Professional", "number"),
    "vehicle": ("Vehicle", "number"),
    "place": ("Place", "number"),
    "phone": ("Phone", "number"),
}
WITHHELD = "[narrative withheld for publication]"
LINK_KINDS = ("person", "vehicle", "place", "phone")


def suppress(count: int) -> int | str:
    return "c" if 1 <= count <= 5 else count


def month(moment: datetime) -> str:
    return moment.astimezone(LONDON).strftime("%B %Y")


class Pseudonyms:
    """Stable publication labels for references, in order of first appearance."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.counts: Counter[str] = Counter()

    def label(self, ref: str) -> str:
        if ref not in self.labels:
            kind = ref.split("_", 1)[0]
            word, style = LABELS.get(kind, ("Person", "number"))
            n = self.counts[kind]
            self.counts[kind] += 1
            suffix = chr(ord("A") + n) if style == "letter" and n < 26 else str(n + 1)
            self.labels[ref] = f"{word} {suffix}"
        return self.labels[ref]


def _refs(value: Any) -> list[str]:
    if isinstance(value, str) and REF_RE.fullmatch(value):
        return [value]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def publication_rows(r: Replay) -> list[dict[str, Any]]:
    """The chronology fit for a published review."""
    names = Pseudonyms()
    rows = []
    for e in r.events:
        people = sorted({names.label(ref) for ref in _refs(dict(e.payload))})
        outcome = next(
            (
                str(e.payload[k])
                for k in ("outcome", "decision", "reason", "ho_outcome")
                if e.payload.get(k)
            ),
            "",
        )
        rows.append(
            {
                "month": month(e.occurred),
                "agency_kind": e.agency_kind,
                "event": humanise(e.type),
                "people": ", ".join(people),
                "outcome": outcome,
                "action": WITHHELD
                if e.payload.get("rationale") or e.payload.get("summary")
                else "",
            }
        )
    return rows


def publish_stats(ledger: Ledger, policy: Policy) -> dict[str, Any]:
    """Counts fit to publish (1-5 suppressed as "c")."""
    kinds = ledger.agency_kinds()
    now = datetime.now(UTC)
    per_month: Counter[tuple[str, str]] = Counter()
    breaches: Counter[tuple[str, str]] = Counter()
    first_response: dict[str, list[float]] = defaultdict(list)
    for case in ledger.cases():
        borough = ", ".join(case["boroughs"]) or "unknown"
        envelopes = ledger.case_envelopes(case["case_id"])
        events, obligations = case_obligations(envelopes, kinds, policy, now)
        if not events:
            continue
        first = events[0].occurred.astimezone(LONDON)
        per_month[(f"{first:%Y-%m}", borough)] += 1
        for o in obligations:
            if o.status in ("breached", "met_late"):
                breaches[(kinds.get(o.owing_agency, o.owing_agency), o.rule.id)] += 1
        answered = [e for e in events if e.responds_to]
        if answered:
            days = (answered[0].occurred - events[0].occurred).total_seconds() / 86400
            first_response[borough].append(days)
    return {
        "cases_per_month_per_borough": [
            {"month": m, "borough": b, "cases": suppress(n)}
            for (m, b), n in sorted(per_month.items())
        ],
        "breaches_per_agency_kind_per_rule": [
            {"agency_kind": a, "rule": rule, "breaches": suppress(n)}
            for (a, rule), n in sorted(breaches.items())
        ],
        "days_to_first_response_median_per_borough": [
            {
                "borough": b,
                "cases": suppress(len(v)),
                "median_days": round(statistics.median(v), 1) if len(v) > 5 else "c",
            }
            for b, v in sorted(first_response.items())
        ],
        "note": "counts of 1 to 5 are shown as c; medians over 5 or fewer cases are withheld",
    }


@dataclass
class LinkSuggestion:
    ref: str
    kind: str
    cases: list[str]
    boroughs: list[str]
    events: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "kind": self.kind,
            "cases": self.cases,
            "boroughs": self.boroughs,
            "events": self.events,
        }


def _linkable_refs(e: CaseEvent) -> list[str]:
    p = e.payload
    refs = [x["ref"] for x in p.get("person_refs", []) or [] if x.get("role") != "victim"]
    refs += list(p.get("vehicle_refs", []) or []) + list(p.get("location_refs", []) or [])
    refs += [p[k] for k in ("suspect_ref", "person_ref") if isinstance(p.get(k), str)]
    return [r for r in refs if r.split("_", 1)[0] in LINK_KINDS]


def decided_links(ledger: Ledger) -> set[tuple[str, str, str]]:
    """(case, other case, ref) already confirmed or rejected by a person."""
    out = set()
    for case in ledger.cases():
        for e in ledger.case_envelopes(case["case_id"]):
            p = e.body["payload"]
            if e.type == "FLAG_RAISED" and p.get("kind") == "linkage":
                tags = dict(t.split(":", 1) for t in p.get("rule_ids", []) if ":" in t)
                if "case" in tags:
                    out.add((case["case_id"], tags["case"], tags["ref"]))
                else:  # written before link decisions were sealed
                    other, ref = p.get("summary", "").split(" ")[1:3]
                    out.add((case["case_id"], other, ref))
    return out


def suggest_links(
    ledger: Ledger, decided: set[tuple[str, str, str]] | None = None
) -> list[LinkSuggestion]:
    """Cases in different boroughs sharing a suspect, vehicle, place or phone reference
    (less those in `decided`, read from the ledger unless the caller has them)."""
    kinds = ledger.agency_kinds()
    seen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    boroughs: dict[str, list[str]] = {}
    for case in ledger.cases():
        boroughs[case["case_id"]] = case["boroughs"]
        for env in ledger.case_envelopes(case["case_id"]):
            for ref in _linkable_refs(CaseEvent.from_envelope(env, kinds)):
                seen[ref][case["case_id"]].append(env.event_id)
    if decided is None:
        decided = decided_links(ledger)
    out = []
    for ref, cases in sorted(seen.items()):
        ids = sorted(cases)
        places = {tuple(boroughs[c]) for c in ids}
        if len(ids) < 2 or len(places) < 2:
            continue
        if all((a, b, ref) in decided for a in ids for b in ids if a != b):
            continue
        out.append(
            LinkSuggestion(
                ref,
                ref.split("_", 1)[0],
                ids,
                sorted({b for c in ids for b in boroughs[c]}),
                [e for c in ids for e in cases[c]],
            )
        )
    return out


def decide_link(
    ledger: Ledger, case_a: str, case_b: str, ref: str, confirm: bool, reason: str, by: str
) -> list[Receipt]:
    """Record a person's decision on a suggested link, in both cases."""
    if not reason.strip():
        raise UsageError("a link decision needs a --reason")
    for case in (case_a, case_b):
        ledger.case_envelopes(case)  # NotFound for an unknown case
    decided = decided_links(ledger)
    if (case_a, case_b, ref) in decided:
        raise Conflict(f"the link between {case_a} and {case_b} via {ref} was already decided")
    suggestions = suggest_links(ledger, decided)
    if not any(s.ref == ref and {case_a, case_b} <= set(s.cases) for s in suggestions):
        raise NotFound(f"no open link suggestion between {case_a} and {case_b} via {ref}")
    verdict = "confirmed" if confirm else "rejected"
    receipts = []
    for here, there in ((case_a, case_b), (case_b, case_a)):
        receipts.append(
            ledger.append_system(
                {"case_id": here},
                "FLAG_RAISED",
                {
                    "kind": "linkage",
                    "summary": f"link {there} {ref} {verdict} by {by}",
                    "rationale": reason,  # a person's words: sealed in the vault
                    "rule_ids": ["LINK", f"case:{there}", f"ref:{ref}", f"verdict:{verdict}"],
                },
                event_id=f"link-{verdict}-"
                + hashlib.sha256(f"{here}\0{there}\0{ref}".encode()).hexdigest()[:32],
                seal=True,
            )
        )
    return receipts
