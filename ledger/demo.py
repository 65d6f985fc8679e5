"""Synthetic demo cases modelled on the failures reported in reviews and inquiries.

Every person, vehicle and place is a pseudonymous reference made from invented
labels; no real case is depicted. The content is fixed (same event ids, times
and payloads on every run), so loading the demo twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .core import Ledger, Submission
from .errors import NotFound
from .keys import Signer, load_key_file
from .refs import pseudonym

DEMO_LINKAGE_KEY = b"response-ledger demo linkage key (synthetic data only)"

AGENCIES: list[tuple[str, str, str, str]] = [
    # id, kind, borough, name
    ("met-police-south", "police", "Lambeth", "Metropolitan Police, South Area BCU"),
    ("met-police-croydon", "police", "Croydon", "Metropolitan Police, South West BCU"),
    ("lambeth-csc", "csc", "Lambeth", "Lambeth Children's Social Care"),
    ("southwark-csc", "csc", "Southwark", "Southwark Children's Social Care"),
    ("croydon-csc", "csc", "Croydon", "Croydon Children's Social Care"),
    ("southwark-mash", "mash", "Southwark", "Southwark MASH"),
    ("lambeth-academy", "education", "Lambeth", "A Lambeth secondary academy"),
    ("kings-sexual-health", "health", "Southwark", "Sexual health service"),
    ("cps-london-south", "cps", "London", "CPS London South"),
    ("croydon-lado", "lado", "Croydon", "Croydon LADO"),
]


def ref(kind: str, label: str) -> str:
    return pseudonym(kind, label, DEMO_LINKAGE_KEY)


CHILD_A = ref("child", "demo child A, 16")
CHILD_B = ref("child", "demo child B, 11")
CHILD_C = ref("child", "demo child C, 14")
CHILD_D = ref("child", "demo child D, 13")
CHILD_E = ref("child", "demo child E, 15")
SUSPECT_1 = ref("person", "demo adult suspect 1")
SUSPECT_2 = ref("person", "demo adult suspect 2")
STAFF_1 = ref("staff", "demo staff member 1")
HOUSE = ref("place", "demo address: flat above takeaway")
CAR = ref("vehicle", "demo vehicle: silver hatchback")


@dataclass
class CaseScript:
    case_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        when: str,
        agency: str,
        event_type: str,
        role: str = "practitioner",
        responds_to: list[int] | None = None,
        corrects: int | None = None,
        **payload: Any,
    ) -> int:
        n = len(self.events) + 1
        self.events.append(
            {
                "v": 2,
                "case_id": self.case_id,
                "event_id": f"{self.case_id}-{n:03d}",
                "type": event_type,
                "occurred_at": when,
                "agency": agency,
                "actor": {"role": role, "ref": ref("staff", f"{agency} {role}")},
                "payload": payload,
                "responds_to": [f"{self.case_id}-{r:03d}" for r in responds_to or []],
                "corrects": None if corrects is None else f"{self.case_id}-{corrects:03d}",
            }
        )
        return n


def scripts() -> list[CaseScript]:
    out = []

    # A 16-year-old's rape disclosure to police: no crime recorded; a later
    # referral from school closed with no further action.
    a = CaseScript("DEMO-LAM-0001")
    d = a.add(
        "2024-03-03T14:05:00Z",
        "met-police-south",
        "DISCLOSURE_RECEIVED",
        "response officer",
        child_ref=CHILD_A,
        child_age=16,
        basis="direct",
        offence="rape",
        sexual_offence=True,
        person_refs=[{"ref": SUSPECT_1, "role": "suspect"}],
        vehicle_refs=[CAR],
        location_refs=[HOUSE],
        summary="Disclosed rape by an adult male; named car and address.",
    )
    a.add(
        "2024-03-03T15:20:00Z",
        "met-police-south",
        "INCIDENT_LOGGED",
        "response officer",
        responds_to=[d],
        child_ref=CHILD_A,
        rationale="Logged as a concern for welfare.",
    )
    s = a.add(
        "2024-04-15T09:30:00Z",
        "lambeth-academy",
        "SCHOOL_CONCERN",
        "designated safeguarding lead",
        child_ref=CHILD_A,
        summary="Withdrawn, missing lessons, seen collected by adult in car.",
    )
    r = a.add(
        "2024-04-15T11:00:00Z",
        "lambeth-academy",
        "REFERRAL_MADE",
        "designated safeguarding lead",
        responds_to=[s],
        child_ref=CHILD_A,
        to_agency="lambeth-csc",
    )
    rr = a.add(
        "2024-04-16T10:00:00Z",
        "lambeth-csc",
        "REFERRAL_RECEIVED",
        "duty social worker",
        responds_to=[r],
        child_ref=CHILD_A,
        referral_source="2A",
        factors=["11A", "19C"],
    )
    a.add(
        "2024-04-19T16:45:00Z",
        "lambeth-csc",
        "REFERRAL_DECISION",
        "team manager",
        responds_to=[rr],
        child_ref=CHILD_A,
        decision="nfa",
        rationale="Police are aware. She is 16 and the relationship appears consensual; "
        "she is making lifestyle choices and is not engaging.",
    )
    a.add(
        "2024-04-22T12:00:00Z",
        "lambeth-csc",
        "CASE_CLOSED",
        "team manager",
        child_ref=CHILD_A,
        reason="RC8",
    )
    a.add(
        "2025-04-19T09:00:00Z",
        "lambeth-csc",
        "SERIOUS_INCIDENT_NOTIFIED",
        "head of service",
        child_ref=CHILD_A,
        summary="Notification to the national panel following the death of a child.",
    )
    out.append(a)

    # An 11-year-old whose referral decision says she was "seeking out older men".
    b = CaseScript("DEMO-SWK-0002")
    c1 = b.add(
        "2023-09-12T08:50:00Z",
        "southwark-mash",
        "REFERRAL_RECEIVED",
        "MASH screener",
        child_ref=CHILD_B,
        child_age=11,
        referral_source="2A",
        factors=["11A", "10A"],
    )
    b.add(
        "2023-09-13T14:00:00Z",
        "southwark-mash",
        "MASH_TRIAGED",
        "MASH screener",
        responds_to=[c1],
        child_ref=CHILD_B,
        rag="amber",
    )
    b.add(
        "2023-09-20T10:00:00Z",
        "southwark-csc",
        "REFERRAL_DECISION",
        "team manager",
        responds_to=[c1],
        child_ref=CHILD_B,
        decision="advice",
        rationale="Mother advised. The child is seeking out older men and is putting herself "
        "at risk; she was warned about her behaviour.",
    )
    b.add(
        "2023-09-21T09:00:00Z",
        "southwark-csc",
        "CASE_CLOSED",
        "team manager",
        child_ref=CHILD_B,
        reason="RC8",
    )
    c2 = b.add(
        "2024-01-08T16:10:00Z",
        "southwark-mash",
        "REFERRAL_RECEIVED",
        "MASH screener",
        child_ref=CHILD_B,
        referral_source="6",
        factors=["11A", "19C"],
        summary="Found in a car with two adult men at 01:00.",
    )
    b.add(
        "2024-01-15T11:00:00Z",
        "southwark-csc",
        "REFERRAL_DECISION",
        "team manager",
        responds_to=[c2],
        child_ref=CHILD_B,
        decision="nfa",
        rationale="Previously assessed; no new concerns. Closed with no further action.",
    )
    b.add(
        "2024-01-16T09:00:00Z",
        "southwark-csc",
        "CASE_CLOSED",
        "team manager",
        child_ref=CHILD_B,
        reason="RC8",
    )
    out.append(b)

    # Repeated missing episodes ending at the same address, in two boroughs.
    for case_id, police, csc, child, dates in (
        (
            "DEMO-LAM-0003",
            "met-police-south",
            "lambeth-csc",
            CHILD_C,
            ["2024-05-04", "2024-05-25", "2024-06-14"],
        ),
        (
            "DEMO-CRO-0004",
            "met-police-croydon",
            "croydon-csc",
            CHILD_D,
            ["2024-06-01", "2024-06-22"],
        ),
    ):
        m = CaseScript(case_id)
        for day in dates:
            mr = m.add(
                f"{day}T21:30:00Z",
                police,
                "MISSING_REPORTED",
                "call handler",
                child_ref=child,
                child_age=14 if child == CHILD_C else 13,
            )
            f = m.add(
                f"{day[:8]}{int(day[8:]) + 1:02d}T06:15:00Z",
                police,
                "FOUND",
                "response officer",
                responds_to=[mr],
                child_ref=child,
                found_with_adult=True,
                location_refs=[HOUSE],
                vehicle_refs=[CAR],
                person_refs=[{"ref": SUSPECT_2, "role": "associate"}],
            )
            if day == dates[0]:
                m.add(
                    f"{day[:8]}{int(day[8:]) + 6:02d}T15:00:00Z",
                    csc,
                    "RHI_OFFERED",
                    "return interview worker",
                    responds_to=[f],
                    child_ref=child,
                )
        if case_id == "DEMO-LAM-0003":
            # The child, not the adult she was found with, is arrested.
            m.add(
                "2024-06-15T07:00:00Z",
                police,
                "ARREST",
                "response officer",
                person_ref=child,
                as_role="suspect",
                rationale="Arrested for obstruction; she refused to engage and was streetwise.",
            )
        out.append(m)

    # A case handled well, for contrast.
    w = CaseScript("DEMO-SWK-0005")
    rr = w.add(
        "2024-02-05T09:10:00Z",
        "southwark-csc",
        "REFERRAL_RECEIVED",
        "duty social worker",
        child_ref=CHILD_E,
        child_age=15,
        referral_source="3F",
        factors=["19C", "11A"],
    )
    w.add(
        "2024-02-05T10:00:00Z",
        "southwark-csc",
        "REFERRAL_ACKNOWLEDGED",
        "duty social worker",
        responds_to=[rr],
        child_ref=CHILD_E,
    )
    dec = w.add(
        "2024-02-05T12:30:00Z",
        "southwark-csc",
        "REFERRAL_DECISION",
        "team manager",
        responds_to=[rr],
        child_ref=CHILD_E,
        decision="strategy",
        rationale="Disclosure of sexual abuse by an adult; threshold for s47 met.",
    )
    cr = w.add(
        "2024-02-05T13:00:00Z",
        "met-police-south",
        "CRIME_RECORDED",
        "investigator",
        responds_to=[rr],
        child_ref=CHILD_E,
        ho_class="Rape of a female under 16",
        flags=["CSE"],
    )
    sd = w.add(
        "2024-02-05T16:00:00Z",
        "southwark-csc",
        "STRATEGY_DISCUSSION_HELD",
        "team manager",
        responds_to=[dec],
        child_ref=CHILD_E,
        outcome="s47_joint",
        attendees=["csc", "police", "health", "education"],
    )
    w.add(
        "2024-02-05T17:00:00Z",
        "southwark-csc",
        "S47_STARTED",
        "social worker",
        responds_to=[sd],
        child_ref=CHILD_E,
    )
    w.add(
        "2024-02-06T10:00:00Z",
        "southwark-csc",
        "CHILD_SEEN",
        "social worker",
        responds_to=[rr],
        child_ref=CHILD_E,
    )
    w.add(
        "2024-02-06T11:00:00Z",
        "kings-sexual-health",
        "CP_MEDICAL",
        "paediatrician",
        child_ref=CHILD_E,
    )
    w.add(
        "2024-02-07T09:00:00Z",
        "met-police-south",
        "VICTIM_SUPPORT_REFERRED",
        "investigator",
        responds_to=[cr],
        child_ref=CHILD_E,
        consent=True,
    )
    w.add(
        "2024-02-07T10:00:00Z",
        "met-police-south",
        "ARREST",
        "investigator",
        responds_to=[cr],
        person_ref=SUSPECT_1,
        as_role="suspect",
    )
    w.add(
        "2024-02-08T15:00:00Z", "met-police-south", "FILE_TO_CPS", "investigator", responds_to=[cr]
    )
    w.add(
        "2024-02-23T10:00:00Z",
        "southwark-csc",
        "ICPC_HELD",
        "CP chair",
        responds_to=[sd],
        child_ref=CHILD_E,
        outcome="cp_plan",
        category="SAB",
    )
    w.add(
        "2024-03-01T11:00:00Z",
        "cps-london-south",
        "CHARGING_DECISION",
        "prosecutor",
        child_ref=CHILD_E,
        decision="charge",
        test="full_code",
        offences=["rape of a child"],
    )
    w.add(
        "2024-03-01T16:00:00Z",
        "met-police-south",
        "VICTIM_NOTIFIED",
        "investigator",
        child_ref=CHILD_E,
        decision="suspect charged",
        channel="in_person",
    )
    w.add(
        "2024-03-06T10:00:00Z",
        "southwark-csc",
        "CORE_GROUP_HELD",
        "social worker",
        child_ref=CHILD_E,
    )
    arrest = next(n for n, e in enumerate(w.events, 1) if e["type"] == "ARREST")
    w.add(
        "2024-02-07T15:00:00Z",
        "met-police-south",
        "VICTIM_NOTIFIED",
        "investigator",
        responds_to=[arrest],
        child_ref=CHILD_E,
        decision="suspect arrested",
        channel="via_parent",
    )
    bail = w.add(
        "2024-02-08T09:00:00Z",
        "met-police-south",
        "BAIL_GRANTED",
        "custody sergeant",
        responds_to=[arrest],
    )
    w.add(
        "2024-02-08T12:00:00Z",
        "met-police-south",
        "VICTIM_NOTIFIED",
        "investigator",
        responds_to=[bail],
        child_ref=CHILD_E,
        decision="suspect bailed with conditions",
        channel="via_parent",
    )
    w.add(
        "2024-03-15T15:00:00Z",
        "southwark-csc",
        "ASSESSMENT_AUTHORISED",
        "team manager",
        child_ref=CHILD_E,
        factors=["19C", "11A"],
        primary_need="N1",
    )
    rcpc = w.add(
        "2024-05-16T10:00:00Z",
        "southwark-csc",
        "RCPC_HELD",
        "CP chair",
        child_ref=CHILD_E,
        outcome="plan_continues",
    )
    w.add(
        "2024-10-30T10:00:00Z",
        "southwark-csc",
        "CP_PLAN_ENDED",
        "CP chair",
        responds_to=[rcpc],
        child_ref=CHILD_E,
    )
    out.append(w)

    # An allegation about a member of staff, with a correction to the record.
    x = CaseScript("DEMO-CRO-0006")
    al = x.add(
        "2025-01-13T15:40:00Z",
        "croydon-lado",
        "ALLEGATION_RECEIVED",
        "LADO",
        child_ref=CHILD_D,
        child_age=13,
        staff_ref=STAFF_1,
    )
    x.add(
        "2025-01-14T09:00:00Z",
        "croydon-lado",
        "LADO_REFERRAL",
        "LADO",
        responds_to=[al],
        child_ref=CHILD_D,
    )
    o = x.add(
        "2025-02-20T12:00:00Z",
        "croydon-lado",
        "LADO_OUTCOME",
        "LADO",
        responds_to=[al],
        child_ref=CHILD_D,
        outcome="unsubstantiated",
    )
    x.add(
        "2025-02-21T09:30:00Z",
        "croydon-lado",
        "RECORD_CORRECTED",
        "LADO",
        corrects=o,
        child_ref=CHILD_D,
        reason="Outcome entered in error; the panel found it substantiated.",
        replacement={"outcome": "substantiated"},
    )
    out.append(x)
    return out


def _signer(ledger: Ledger, agency: str, kind: str, borough: str, name: str) -> Signer:
    try:
        ledger.agency(agency)
    except NotFound:
        ledger.register_agency(agency, kind, borough=borough, name=name)
    return load_key_file(ledger.agency_key_path(agency))


def load_demo(ledger: Ledger, origin: str) -> dict[str, Any]:
    """Register the demo agencies and append the demo cases (idempotent)."""
    if ledger.root() is None:
        ledger.init(origin)
    signers = {a: _signer(ledger, a, k, b, n) for a, k, b, n in AGENCIES}
    submissions = []
    for script in scripts():
        for body in script.events:
            submissions.append(Submission.signed(body, signers[body["agency"]]))
    receipts = ledger.append_many(submissions)
    return {
        "cases": len(scripts()),
        "events": len(receipts),
        "new_events": sum(not r.duplicate for r in receipts),
        "agencies": len(AGENCIES),
    }
