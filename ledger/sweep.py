"""The watchdog: turn every obligation that passed its deadline undone into a signed fact.

`sweep` walks the cases a page at a time (memory flat in the number of cases),
computes each case's obligations as of `now`, and appends one ledger-signed
`DEADLINE_BREACHED` per breached obligation that fell due while the ledger was
live. The breach's event id is derived from the case, rule and trigger, and its
body from the obligation alone, so a second sweep, or two at once, can only
reproduce the same event, which idempotency turns into a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from .core import Ledger, Submission
from .events import format_time
from .obligations import Obligation, case_obligations
from .policy import Policy

BATCH = 500


@dataclass
class SweepSummary:
    cases: int = 0
    obligations: int = 0
    breached: int = 0
    appended: int = 0
    already_recorded: int = 0
    retrospective: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def breach_event_id(case_id: str, ob: Obligation) -> str:
    digest = hashlib.sha256(f"{case_id}\0{ob.rule.id}\0{ob.trigger.event_id}".encode())
    return f"breach-{ob.rule.id}-{digest.hexdigest()[:32]}"


def breach_submission(ledger: Ledger, case_id: str, ob: Obligation, policy: Policy) -> Submission:
    payload = {
        "rule": ob.rule.id,
        "trigger_event_id": ob.trigger.event_id,
        "owing_agency": ob.owing_agency,
        "due_at": format_time(ob.due),
        "policy_id": policy.id,
        "policy_hash": policy.hash,
        "summary": f"{ob.owing_agency} {ob.rule.failure} ({ob.rule.title})",
    }
    return ledger.system_submission(
        {"case_id": case_id},
        "DEADLINE_BREACHED",
        payload,
        breach_event_id(case_id, ob),
        occurred_at=ob.due,
    )


def sweep(
    ledger: Ledger, policy: Policy, now: datetime, progress: Callable[[int], None] | None = None
) -> SweepSummary:
    summary = SweepSummary()
    kinds = ledger.agency_kinds()
    pending: list[Submission] = []

    def flush() -> None:
        receipts = ledger.append_many(pending, system=True)
        summary.appended += sum(not r.duplicate for r in receipts)
        summary.already_recorded += sum(r.duplicate for r in receipts)
        pending.clear()

    for case_id in ledger.iter_case_ids():
        summary.cases += 1
        envelopes = ledger.case_envelopes(case_id, cached=False)
        recorded = {
            (e.body["payload"]["rule"], e.body["payload"]["trigger_event_id"])
            for e in envelopes
            if e.type == "DEADLINE_BREACHED"
        }
        for ob in case_obligations(envelopes, kinds, policy, now)[1]:
            summary.obligations += 1
            if ob.status != "breached":
                continue
            summary.breached += 1
            if ob.retrospective:
                summary.retrospective += 1
                continue
            if (ob.rule.id, ob.trigger.event_id) in recorded:
                summary.already_recorded += 1
                continue
            pending.append(breach_submission(ledger, case_id, ob, policy))
            if len(pending) >= BATCH:
                flush()
        if progress is not None:
            progress(1)
    if pending:
        flush()
    return summary
