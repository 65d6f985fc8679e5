"""The event vocabulary: envelope body and one pydantic payload model per event type.

Types follow shared/domain/research.md §5 (intake, social care, police, CPS,
missing, health, education, LADO, review/system). Coded values use the CIN
census 2024 codes and Home Office outcome numbers the research gives. People,
vehicles and places appear only as pseudonymous references in a validated
format; a name typed into a reference field is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)
from pydantic import ValidationError as PydanticValidationError

from .clock import EARLIEST
from .errors import ValidationError
from .refs import REF_BODY
from .verify import (
    BODY_KEYS,
    GENESIS_TYPE,
    LEDGER_STREAM_TYPES,
    NARRATIVE_FIELDS,
    REGISTRY_TYPES,
    TIMESTAMP_RE,
)

REF_PATTERN = rf"^{REF_BODY}$"
Ref = Annotated[str, StringConstraints(pattern=REF_PATTERN)]
ChildRef = Annotated[str, StringConstraints(pattern=r"^child_[a-z2-7]{26}$")]
PersonRef = Annotated[str, StringConstraints(pattern=r"^(child|person|staff)_[a-z2-7]{26}$")]
VehicleRef = Annotated[str, StringConstraints(pattern=r"^vehicle_[a-z2-7]{26}$")]
PlaceRef = Annotated[str, StringConstraints(pattern=r"^place_[a-z2-7]{26}$")]
AGENCY_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,47}$"
AGENCY_ID_RE = re.compile(AGENCY_ID_PATTERN)
AgencyId = Annotated[str, StringConstraints(pattern=AGENCY_ID_PATTERN)]
CaseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
EventId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Text = Annotated[str, StringConstraints(max_length=8000)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=120)]
Commitment = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

FUTURE_TOLERANCE = timedelta(minutes=5)


def _exact_int(value: Any) -> Any:
    """Refuse true, 1.0 and "1" where a whole number is meant.

    The stored body is the signed JSON as sent, so a value pydantic would coerce
    must be refused, not read one way here and another way downstream.
    """
    if type(value) is not int:
        raise ValueError("must be a whole number")
    return value


ExactInt = BeforeValidator(_exact_int)


class AgencyKind(StrEnum):
    POLICE = "police"
    CSC = "csc"
    HEALTH = "health"
    EDUCATION = "education"
    CPS = "cps"
    LA = "la"
    LADO = "lado"
    MASH = "mash"
    VCS = "vcs"


class ReferralSource(StrEnum):
    """CIN census ReferralSource codes."""

    INDIVIDUAL_FAMILY = "1A"
    INDIVIDUAL_ACQUAINTANCE = "1B"
    INDIVIDUAL_SELF = "1C"
    INDIVIDUAL_OTHER = "1D"
    SCHOOLS = "2A"
    EDUCATION_SERVICES = "2B"
    GP = "3A"
    HEALTH_VISITOR = "3B"
    SCHOOL_NURSE = "3C"
    OTHER_PRIMARY_HEALTH = "3D"
    A_AND_E = "3E"
    OTHER_HEALTH = "3F"
    HOUSING = "4"
    LA_SOCIAL_CARE = "5A"
    LA_OTHER_DEPARTMENT = "5B"
    ANOTHER_LA = "5C"
    EARLY_HELP = "5D"
    POLICE = "6"
    OTHER_LEGAL_AGENCY = "7"
    OTHER = "8"
    ANONYMOUS = "9"
    UNKNOWN = "10"


class AssessmentFactor(StrEnum):
    """CIN census assessment factor codes named in the research."""

    MISSING = "10A"
    CSE = "11A"
    TRAFFICKING = "12A"
    GANGS = "13A"
    SELF_HARM = "15A"
    SEXUAL_ABUSE_CHILD_ON_CHILD = "19B"
    SEXUAL_ABUSE_ADULT_ON_CHILD = "19C"
    NO_FACTORS = "21"
    CCE = "24A"


PrimaryNeed = Literal["N0", "N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8", "N9"]
AbuseCategory = Literal["NEG", "PHY", "SAB", "EMO", "MUL"]
ClosureReason = Literal["RC1", "RC2", "RC3", "RC4", "RC5", "RC6", "RC7", "RC8", "RC9"]
# Home Office crime outcome types given in the research (numbers as published).
HomeOfficeOutcome = Annotated[Literal[1, 2, 3, 8, 10, 14, 15, 16, 18, 20, 21, 22], ExactInt]
SourceBasis = Literal["direct", "third_party", "anonymous"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Actor(Model):
    role: Label
    ref: PersonRef | None = None


class PersonLink(Model):
    ref: PersonRef
    role: Literal["victim", "suspect", "associate", "witness", "parent", "carer", "staff"]


class Payload(Model):
    """Fields any event may carry: who it concerns and why the decision was made."""

    child_ref: ChildRef | None = None
    person_refs: list[PersonLink] = Field(default_factory=list)
    vehicle_refs: list[VehicleRef] = Field(default_factory=list)
    location_refs: list[PlaceRef] = Field(default_factory=list)
    decision_maker: Actor | None = None
    rationale: Text | None = None
    summary: Text | None = None
    rule_ids: list[Label] = Field(default_factory=list)
    # Facts response standards turn on (an age, never a date of birth).
    child_age: Annotated[StrictInt, Field(ge=0, le=25)] | None = None
    significant_harm_suspected: StrictBool | None = None
    enhanced_rights: StrictBool | None = None
    cp_plan_active: StrictBool | None = None


# --- intake -----------------------------------------------------------------
class ConcernRaised(Payload):
    source: ReferralSource | None = None
    basis: SourceBasis = "direct"
    factors: list[AssessmentFactor] = Field(default_factory=list)


class DisclosureReceived(Payload):
    basis: SourceBasis = "direct"
    offence: Label | None = None
    sexual_offence: StrictBool = False


class ReferralMade(Payload):
    to_agency: AgencyId


class ReferralReceived(Payload):
    referral_source: ReferralSource
    factors: list[AssessmentFactor] = Field(default_factory=list)
    from_agency: AgencyId | None = None


class MashTriaged(Payload):
    rag: Literal["red", "amber", "green"]


class InformationRequested(Payload):
    from_agency: AgencyId


class InformationShared(Payload):
    to_agency: AgencyId


class InformationDeclined(Payload):
    to_agency: AgencyId


# --- children's social care --------------------------------------------------
class ReferralDecision(Payload):
    decision: Literal[
        "nfa", "advice", "early_help", "s17", "strategy", "immediate_protection", "transfer"
    ]


class StrategyDiscussionHeld(Payload):
    outcome: Literal["s47_single", "s47_joint", "no_s47"]
    attendees: list[AgencyKind] = Field(default_factory=list)


class S47Concluded(Payload):
    outcome: Literal["not_substantiated", "substantiated_no_icpc", "icpc"]


class AssessmentAuthorised(Payload):
    factors: list[AssessmentFactor] = Field(default_factory=list)
    primary_need: PrimaryNeed | None = None


class IcpcHeld(Payload):
    outcome: Literal["cp_plan", "cin_plan", "nfa"]
    category: AbuseCategory | None = None


class RcpcHeld(Payload):
    outcome: Literal["plan_continues", "plan_ended"]


class CaseClosed(Payload):
    reason: ClosureReason


class TransferRequested(Payload):
    to_agency: AgencyId


# --- police ------------------------------------------------------------------
class CrimeRecorded(Payload):
    ho_class: Label | None = None
    flags: list[Label] = Field(default_factory=list)


class CrimeReclassified(Payload):
    ho_class: Label


class CrimeCancelled(Payload):
    ground: Literal[
        "outside_jurisdiction",
        "additional_verifiable_information",
        "duplicate",
        "recorded_in_error",
    ]


class CrossForceTransfer(Payload):
    to_agency: AgencyId


class SuspectIdentified(Payload):
    suspect_ref: PersonRef


class Arrest(Payload):
    person_ref: PersonRef
    as_role: Literal["suspect", "victim", "other"] = "suspect"


class OutcomeAssigned(Payload):
    ho_outcome: HomeOfficeOutcome


class VictimNotified(Payload):
    decision: Label
    channel: Literal["in_person", "phone", "letter", "email", "via_parent"] = "phone"


class VictimSupportReferred(Payload):
    consent: StrictBool


class VrrDecided(Payload):
    upheld: StrictBool


# --- CPS ---------------------------------------------------------------------
class ChargingDecision(Payload):
    decision: Literal["charge", "nfa", "further_evidence"]
    test: Literal["full_code", "threshold"] | None = None
    offences: list[Label] = Field(default_factory=list)


# --- missing -----------------------------------------------------------------
class Found(Payload):
    found_with_adult: StrictBool = False


# --- health and education ----------------------------------------------------
class HealthPresentation(Payload):
    setting: Literal["a_and_e", "sexual_health", "pregnancy", "sti"]


# --- LADO --------------------------------------------------------------------
class AllegationReceived(Payload):
    staff_ref: PersonRef


class LadoOutcome(Payload):
    outcome: Literal["substantiated", "false", "malicious", "unsubstantiated", "unfounded"]


# --- review and system -------------------------------------------------------
class DeadlineBreached(Payload):
    rule: Label
    trigger_event_id: EventId
    owing_agency: AgencyId
    due_at: str
    policy_id: Label
    policy_hash: Label


class FlagRaised(Payload):
    kind: Literal["language", "pattern", "completeness", "linkage", "serious_harm_or_death"]


class RecordCorrected(Payload):
    reason: Text
    replacement: dict[str, Any] = Field(default_factory=dict)


class KeyShredded(Payload):
    subject_ref: Ref


class LegalHoldSet(Payload):
    reason: Text


class Access(Payload):
    reader: Label


class AgencyRegistered(Model):
    kind: AgencyKind
    name: Label | None = None
    borough: Label | None = None


class AgencyKeyAdded(Model):
    public_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]


class AgencyKeyRevoked(Model):
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    reason: Label


class SubjectErased(Model):
    subject_ref: Ref
    reason: Text


class NarrativeErased(Model):
    case_ref: CaseId
    reason: Text


class LedgerInitialised(Model):
    origin: Label
    public_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]


VOCABULARY: dict[str, dict[str, type[Model]]] = {
    "intake": {
        "CONCERN_RAISED": ConcernRaised,
        "DISCLOSURE_RECEIVED": DisclosureReceived,
        "REFERRAL_MADE": ReferralMade,
        "REFERRAL_RECEIVED": ReferralReceived,
        "REFERRAL_ACKNOWLEDGED": Payload,
        "MASH_TRIAGED": MashTriaged,
        "INFORMATION_REQUESTED": InformationRequested,
        "INFORMATION_SHARED": InformationShared,
        "INFORMATION_DECLINED": InformationDeclined,
    },
    "social_care": {
        "REFERRAL_DECISION": ReferralDecision,
        "STRATEGY_DISCUSSION_HELD": StrategyDiscussionHeld,
        "S47_STARTED": Payload,
        "S47_CONCLUDED": S47Concluded,
        "ASSESSMENT_STARTED": Payload,
        "ASSESSMENT_AUTHORISED": AssessmentAuthorised,
        "CHILD_SEEN": Payload,
        "ICPC_HELD": IcpcHeld,
        "CORE_GROUP_HELD": Payload,
        "RCPC_HELD": RcpcHeld,
        "CP_PLAN_ENDED": Payload,
        "CIN_PLAN_STARTED": Payload,
        "CIN_PLAN_ENDED": Payload,
        "CASE_CLOSED": CaseClosed,
        "CASE_TRANSFER_REQUESTED": TransferRequested,
        "CASE_TRANSFER_ACCEPTED": Payload,
    },
    "police": {
        "INCIDENT_LOGGED": Payload,
        "CRIME_RECORDED": CrimeRecorded,
        "N100_RECORDED": Payload,
        "CRIME_RECLASSIFIED": CrimeReclassified,
        "CRIME_CANCELLED": CrimeCancelled,
        "CROSS_FORCE_TRANSFER": CrossForceTransfer,
        "INVESTIGATION_ALLOCATED": Payload,
        "ABE_INTERVIEW": Payload,
        "SUSPECT_IDENTIFIED": SuspectIdentified,
        "ARREST": Arrest,
        "SUSPECT_INTERVIEW": Payload,
        "BAIL_GRANTED": Payload,
        "BAIL_EXTENDED": Payload,
        "RUI": Payload,
        "FILE_TO_CPS": Payload,
        "OUTCOME_ASSIGNED": OutcomeAssigned,
        "VICTIM_NOTIFIED": VictimNotified,
        "VICTIM_SUPPORT_REFERRED": VictimSupportReferred,
        "VRR_REQUESTED": Payload,
        "VRR_DECIDED": VrrDecided,
    },
    "cps": {
        "EARLY_ADVICE": Payload,
        "CHARGING_DECISION": ChargingDecision,
        "DISCONTINUANCE": Payload,
    },
    "missing": {
        "MISSING_REPORTED": Payload,
        "FOUND": Found,
        "RHI_OFFERED": Payload,
        "RHI_COMPLETED": Payload,
        "RHI_DECLINED": Payload,
    },
    "health": {
        "HEALTH_PRESENTATION": HealthPresentation,
        "CP_MEDICAL": Payload,
        "SARC_ATTENDANCE": Payload,
    },
    "education": {
        "SCHOOL_CONCERN": Payload,
        "CHILD_MISSING_EDUCATION": Payload,
    },
    "lado": {
        "ALLEGATION_RECEIVED": AllegationReceived,
        "LADO_REFERRAL": Payload,
        "LADO_OUTCOME": LadoOutcome,
    },
    "review": {
        "ESCALATION_RAISED": Payload,
        "SERIOUS_INCIDENT_NOTIFIED": Payload,
        "RAPID_REVIEW_SUBMITTED": Payload,
        "CSPR_COMMISSIONED": Payload,
        "CSPR_PUBLISHED": Payload,
        "DEADLINE_BREACHED": DeadlineBreached,
        "FLAG_RAISED": FlagRaised,
        "RECORD_CORRECTED": RecordCorrected,
        "REDACTION_APPLIED": Payload,
        "KEY_SHREDDED": KeyShredded,
        "LEGAL_HOLD_SET": LegalHoldSet,
        "ACCESS_GRANTED": Access,
        "ACCESS_READ": Access,
    },
}

CASE_TYPES: dict[str, type[Model]] = {
    name: model for group in VOCABULARY.values() for name, model in group.items()
}
LEDGER_TYPES: dict[str, type[Model]] = {
    GENESIS_TYPE: LedgerInitialised,
    "SUBJECT_ERASED": SubjectErased,
    "NARRATIVE_ERASED": NarrativeErased,
    "AGENCY_REGISTERED": AgencyRegistered,
    "AGENCY_KEY_ADDED": AgencyKeyAdded,
    "AGENCY_KEY_REVOKED": AgencyKeyRevoked,
}
# Only the ledger itself may write these into a case (the watchdog, erasure, access log).
SYSTEM_CASE_TYPES = frozenset({"DEADLINE_BREACHED", "KEY_SHREDDED", "ACCESS_READ"})
assert LEDGER_TYPES.keys() >= REGISTRY_TYPES


def _describe(e: PydanticValidationError, where: str) -> str:
    first = e.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    field = f"{where}.{loc}" if loc else where
    return f"{field}: {first['msg']}"


class Body(Model):
    """The agency-signed part of an event, before canonicalisation."""

    v: Annotated[Literal[1, 2], ExactInt] = 1
    case_id: CaseId | None = None
    agency_id: AgencyId | None = None
    event_id: EventId
    type: Label
    occurred_at: str
    agency: AgencyId
    actor: Actor
    payload: dict[str, Any]
    responds_to: list[EventId] = Field(default_factory=list)
    corrects: EventId | None = None
    key_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    narrative: dict[Literal["rationale", "summary"], Commitment] | None = None


def _check_narrative(body: Body, where: str) -> None:
    """Free text about people reaches the chain only as a commitment (body version 2).

    A version 1 body may carry `rationale` or `summary` text only when the ledger
    writes it (machine-made summaries); an agency's narrative goes to the vault.
    """
    plain = [f for f in NARRATIVE_FIELDS if f in body.payload]
    if body.v == 1:
        if body.narrative is not None:
            raise ValidationError(f"{where}: narrative commitments need body version 2")
        if plain and body.agency != "ledger":
            raise ValidationError(
                f"{where}: payload.{plain[0]} is free text and must be sealed in the vault: "
                "send a version 2 body with narrative commitments (docs/FORMATS.md)"
            )
    elif plain:
        raise ValidationError(
            f"{where}: a version 2 body carries payload.{plain[0]} only as a commitment "
            "in 'narrative'"
        )
    elif body.narrative is not None and body.case_id is None:
        raise ValidationError(f"{where}: only case events carry narrative")


def parse_time(text: str, field: str = "occurred_at") -> datetime:
    """A UTC RFC 3339 time in the body's fixed form ('Z', at most microseconds)."""
    if not TIMESTAMP_RE.match(text):
        raise ValidationError(f"{field}: {text!r} is not a UTC time like 2024-03-03T14:05:00Z")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValidationError(f"{field}: {text!r} is not a real date and time: {e}") from None


def format_time(moment: datetime) -> str:
    """Body form of a time: UTC, whole seconds unless sub-second precision was given."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_body(raw: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Check a submitted body against the envelope and its type's payload schema.

    Returns the body unchanged: the agency signed exactly these values, so every
    field must be present as signed, and nothing is filled in or normalised here.
    """
    if not isinstance(raw, dict):
        raise ValidationError("body must be a JSON object")
    missing = BODY_KEYS - raw.keys()
    if missing:
        raise ValidationError(f"body: missing field(s) {', '.join(sorted(missing))}")
    twin = "agency_id" if raw.get("type") not in REGISTRY_TYPES else "case_id"
    if twin in raw and raw.get("type") not in LEDGER_STREAM_TYPES:
        raise ValidationError(f"body: field {twin} does not belong in a {raw.get('type')} event")
    try:
        body = Body.model_validate(raw)
    except PydanticValidationError as e:
        raise ValidationError(_describe(e, "body")) from None
    where = f"event {body.event_id}"
    if "narrative" in raw and not raw["narrative"]:
        raise ValidationError(f"{where}: narrative, when present, names at least one field")
    registry = body.case_id is None
    models = LEDGER_TYPES if registry else CASE_TYPES
    model = models.get(body.type)
    if model is None:
        known = "a ledger type" if registry else "one of the case event types"
        raise ValidationError(f"{where}: unknown event type {body.type!r} (expected {known})")
    if body.type in REGISTRY_TYPES:
        if body.agency_id is None or body.case_id is not None:
            raise ValidationError(f"{where}: {body.type} names agency_id and no case_id")
    elif body.type not in LEDGER_STREAM_TYPES and (
        body.case_id is None or body.agency_id is not None
    ):
        raise ValidationError(f"{where}: a case event names case_id and no agency_id")
    if body.type in SYSTEM_CASE_TYPES and body.agency != "ledger":
        raise ValidationError(f"{where}: only the ledger itself may record {body.type}")
    _check_narrative(body, where)
    try:
        model.model_validate(body.payload)
    except PydanticValidationError as e:
        raise ValidationError(f"{where}: {_describe(e, 'payload')}") from None
    occurred = parse_time(body.occurred_at)
    # No event about a child today happened before it; earlier years also break
    # local-time arithmetic (a year-1 instant has no London date).
    if occurred < EARLIEST:
        raise ValidationError(f"{where}: occurred_at {body.occurred_at} is before 1900")
    if occurred > now + FUTURE_TOLERANCE:
        raise ValidationError(
            f"{where}: occurred_at {body.occurred_at} is more than 5 minutes in the future"
        )
    if body.corrects is not None and body.type != "RECORD_CORRECTED":
        raise ValidationError(f"{where}: only RECORD_CORRECTED may name 'corrects'")
    if body.type == "RECORD_CORRECTED" and body.corrects is None:
        raise ValidationError(f"{where}: RECORD_CORRECTED must name the event it corrects")
    if body.event_id in body.responds_to or body.corrects == body.event_id:
        raise ValidationError(f"{where}: an event cannot respond to or correct itself")
    return raw
