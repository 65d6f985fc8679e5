"""Appending events: one at a time (group-committed) or in atomic batches."""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ledger.core import Receipt, Submission
from ledger.errors import LedgerError
from ledger.narrative import from_wire
from ledger.tokens import Principal
from ledger.verify import b64decode, narrative_commitment

from ..deps import SUBMITTED, Agency, Server, server_of

router = APIRouter(tags=["events"])

EXAMPLE_SALT = bytes(range(32))
EXAMPLE_RATIONALE = "Recorded as rape of a child under 16 on the day of disclosure."
EXAMPLE_NARRATIVE: dict[str, Any] = {
    "rationale": {"text": EXAMPLE_RATIONALE, "salt": base64.b64encode(EXAMPLE_SALT).decode()}
}
EXAMPLE_BODY: dict[str, Any] = {
    "v": 2,
    "case_id": "DEMO-LAM-0001",
    "event_id": "met-2024-000123",
    "type": "CRIME_RECORDED",
    "occurred_at": "2024-03-04T09:00:00Z",
    "agency": "met-police-south",
    "actor": {"role": "investigator"},
    "payload": {"child_ref": "child_awlkmltuwbsmx7skxa3s5unaba", "ho_class": "Rape"},
    "responds_to": ["DEMO-LAM-0001-001"],
    "corrects": None,
    "key_id": "2aa025ccd4a0462a5ca0d41dc9e6b85e",
    "narrative": {"rationale": narrative_commitment("rationale", EXAMPLE_RATIONALE, EXAMPLE_SALT)},
}


class NarrativeIn(BaseModel):
    """One narrative field's words and its 32-byte salt (base64): what the body's
    commitment in `narrative` stands for. Sealed in the vault, never chained."""

    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(max_length=8000)]
    salt: Annotated[str, Field(max_length=64)]


class SignedEvent(BaseModel):
    """A body as the agency signed it (RFC 8785 form is computed by the ledger), the
    base64 Ed25519 signature over `response-ledger/v1/event-body\\n` + canonical body,
    and, for a version 2 body, the narrative texts its commitments stand for."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "body": EXAMPLE_BODY,
                    "sig": "base64 signature (88 characters)",
                    "narrative": EXAMPLE_NARRATIVE,
                }
            ]
        },
    )
    body: dict[str, Any]
    sig: Annotated[str, Field(max_length=200)]
    narrative: dict[str, NarrativeIn] | None = None


class ReceiptOut(BaseModel):
    """What the agency keeps: where the event sits in its case's chain, and its hash."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "case_id": "DEMO-LAM-0001",
                    "event_id": "met-2024-000123",
                    "seq": 9,
                    "event_hash": "65ce5af2da7017d924d81a73b3288598"
                    "98f2fcbe703394ff9b2df005e557d795",
                    "recorded_at": "2026-11-25T11:46:03.677086Z",
                    "leaf_index": None,
                    "duplicate": False,
                }
            ]
        }
    )
    case_id: str | None
    event_id: str
    seq: int
    event_hash: str
    recorded_at: str
    leaf_index: int | None = None
    duplicate: bool = False


class Batch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"events": [{"body": EXAMPLE_BODY, "sig": "base64 signature (88 characters)"}]}
            ]
        },
    )
    events: Annotated[list[SignedEvent], Field(min_length=1, max_length=1000)]


class BatchReceipts(BaseModel):
    receipts: list[ReceiptOut]


def to_submission(
    event: SignedEvent, who: Principal, case_id: str | None, n: int | None = None
) -> Submission:
    where = "" if n is None else f"events[{n}]: "
    body = event.body
    if body.get("agency") != who.agency:
        raise HTTPException(
            403, f"{where}this token writes as {who.agency!r}, not as {body.get('agency')!r}"
        )
    if case_id is not None and body.get("case_id") != case_id:
        raise HTTPException(
            422,
            f"{where}body.case_id {body.get('case_id')!r} is not the "
            f"case in the path ({case_id!r})",
        )
    if not isinstance(body.get("case_id"), str):
        raise HTTPException(422, f"{where}body.case_id is required")
    try:
        sig = b64decode(event.sig)
    except (ValueError, TypeError):
        raise HTTPException(422, f"{where}sig is not base64") from None
    texts = None
    if event.narrative is not None:
        texts = {name: item.model_dump() for name, item in event.narrative.items()}
    return Submission(body, sig, from_wire(str(body.get("event_id")), texts))


def receipt_out(srv: Server, r: Receipt) -> ReceiptOut:
    """The receipt; a repeat of an event integrated since also gets its leaf index."""
    leaf: int | None = None
    if r.duplicate:
        try:
            leaf = srv.ledger.log.leaf_index_of(r.event_hash)
        except LedgerError:  # not integrated yet
            leaf = None
    return ReceiptOut(
        case_id=r.case_id,
        event_id=r.event_id,
        seq=r.seq,
        event_hash=r.event_hash,
        recorded_at=r.recorded_at,
        leaf_index=leaf,
        duplicate=r.duplicate,
    )


@router.post(
    "/v1/cases/{case_id}/events",
    status_code=201,
    response_model=ReceiptOut,
    summary="Append one signed event (retries with the same event_id are safe)",
    responses={
        200: {
            "description": "Already recorded with this body: the original receipt",
            "model": ReceiptOut,
        },
        409: {"description": "event_id already used with a different body"},
    },
)
async def append_event(
    case_id: str,
    event: Annotated[SignedEvent, Body()],
    who: Agency,
    request: Request,
) -> Response:
    # api/fastpath.py answers most calls (newly recorded, nothing wrong) before they get
    # here, with to_submission and receipt_out: a change here belongs there too.
    srv = server_of(request)  # not a dependency: the hot path resolves as few as it can
    submission = to_submission(event, who, case_id)
    submitted = request.scope.get("state", {}).get(SUBMITTED)
    if isinstance(submitted, Exception):
        raise submitted
    receipt = (
        submitted
        if isinstance(submitted, Receipt)
        else await srv.committer.submit_awaitable(submission)
    )
    if not receipt.duplicate:
        out, status = receipt_out(srv, receipt), 201
    else:
        out, status = await run_in_threadpool(receipt_out, srv, receipt), 200
    # Serialised here: FastAPI would validate again the model just built.
    return Response(out.model_dump_json(), status_code=status, media_type="application/json")


@router.post(
    "/v1/events:batch",
    status_code=201,
    response_model=BatchReceipts,
    summary="Append up to 1,000 signed events atomically: all are recorded, or none",
    description="201 when any event was newly recorded; 200 when every one of them had "
    "been recorded before (a retry), each with its original receipt.",
    responses={200: {"model": BatchReceipts, "description": "a retry: all already recorded"}},
)
async def append_batch(batch: Batch, who: Agency, request: Request) -> Response:
    srv = server_of(request)
    submissions = [to_submission(e, who, None, n) for n, e in enumerate(batch.events)]

    receipts = await asyncio.wrap_future(srv.committer.submit_batch(submissions))

    def out() -> BatchReceipts:
        # As for a single append: a repeat already integrated also gets its leaf index.
        return BatchReceipts(receipts=[receipt_out(srv, r) for r in receipts])

    if not any(r.duplicate for r in receipts):
        body = out()
    else:
        body = await run_in_threadpool(out)  # leaf indexes are read from the database
    status = 200 if all(r.duplicate for r in receipts) else 201
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")
