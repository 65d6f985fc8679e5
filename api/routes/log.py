"""The verifiable log: checkpoints for anyone with a token; proofs and entries for auditors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.checkpoint import NoteError, NoteVerifier
from ledger.verify import FormatError, parse_envelope

from ..deps import AnyRole, Auditor, Srv
from . import json_example

router = APIRouter(tags=["log"])
NonNegative = Annotated[int, Query(ge=0, le=2**53)]


@router.get(
    "/v1/log/checkpoint",
    response_class=PlainTextResponse,
    summary="Latest signed checkpoint (C2SP signed note, with cosignatures)",
    responses={
        200: {
            "content": {
                "text/plain": {
                    "example": "response-ledger.local/log\n67\nVBrKm9Sd...=\n\n"
                    "— response-ledger.local/log iFa3...\n"
                }
            }
        }
    },
)
async def checkpoint(who: AnyRole, srv: Srv) -> PlainTextResponse:
    note = await run_in_threadpool(srv.ledger.log.latest_checkpoint)
    return PlainTextResponse(note)


@router.get(
    "/v1/log/proof/inclusion",
    summary="RFC 9162 inclusion proof",
    responses=json_example(
        {
            "leaf_index": 5,
            "tree_size": 67,
            "leaf_hash": "eay5so5M...=",
            "event_hash": "80d10568...",
            "proof": ["SsxdVa0i...="],
            "root": "VBrKm9Sd...=",
        }
    ),
)
async def inclusion(
    who: Auditor,
    srv: Srv,
    index: NonNegative | None = None,
    tree_size: NonNegative | None = None,
    event_hash: Annotated[str | None, Query(pattern="^[0-9a-fA-F]{64}$")] = None,
) -> dict[str, Any]:
    if (index is None) == (event_hash is None):
        raise HTTPException(400, "give exactly one of index and event_hash")

    def work() -> dict[str, Any]:
        leaf = index if index is not None else srv.ledger.log.leaf_index_of(str(event_hash))
        return srv.ledger.log.inclusion(leaf, tree_size).as_dict()

    return await run_in_threadpool(work)


@router.get(
    "/v1/log/proof/consistency",
    summary="RFC 9162 consistency proof",
    responses=json_example(
        {
            "first": 10,
            "second": 67,
            "proof": ["jsRkrDyi...="],
            "first_root": "...=",
            "second_root": "VBrKm9Sd...=",
        }
    ),
)
async def consistency(
    who: Auditor, srv: Srv, first: NonNegative, second: NonNegative
) -> dict[str, Any]:
    return (await run_in_threadpool(srv.ledger.log.consistency, first, second)).as_dict()


class Cosignature(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "tree_size": 67,
                    "verifier_key": "witness.example/w1+a1b2c3d4+BB...=",
                    "line": "— witness.example/w1 obPP...==",
                }
            ]
        },
    )
    tree_size: Annotated[int, Field(ge=1)]
    verifier_key: Annotated[str, Field(max_length=500)]
    line: Annotated[str, Field(max_length=500)]


@router.post(
    "/v1/log/cosignatures",
    status_code=201,
    summary="A witness's C2SP cosignature of a checkpoint (checked, then served)",
)
async def add_cosignature(cosignature: Cosignature, who: Auditor, srv: Srv) -> dict[str, Any]:
    try:
        witness = NoteVerifier.parse(cosignature.verifier_key)
    except NoteError as e:
        raise HTTPException(422, f"verifier_key: {e}") from None
    await run_in_threadpool(
        srv.ledger.log.add_cosignature, cosignature.tree_size, witness, cosignature.line
    )
    return {"tree_size": cosignature.tree_size, "witness": witness.name}


@router.get(
    "/v1/log/entries",
    summary="Log entries [start, end) with their stored bytes",
    responses=json_example(
        {
            "entries": [
                {
                    "leaf_index": 0,
                    "event_hash": "0e554608...",
                    "envelope": '{"body":...}',
                }
            ]
        }
    ),
)
async def entries(who: Auditor, srv: Srv, start: NonNegative, end: NonNegative) -> dict[str, Any]:
    if end <= start or end - start > 1000:
        raise HTTPException(400, "need start < end and at most 1000 entries")

    def work() -> list[dict[str, Any]]:
        rows = srv.ledger.log.entries(start, end)
        # The stored bytes are case events: each case read is on record, as for a bundle.
        cases = sorted({c for c in map(_case_of, rows) if c is not None})
        if cases:
            srv.ledger.record_accesses(
                [(case, who.name, who.role.value, "/v1/log/entries") for case in cases]
            )
        return rows

    return {"entries": await run_in_threadpool(work)}


def _case_of(entry: dict[str, Any]) -> str | None:
    """The case an entry's stored bytes belong to (None for other streams, or bytes
    that no longer parse: `ledger verify` reports those)."""
    if entry["envelope"] is None:
        return None
    try:
        stream = parse_envelope(entry["envelope"].encode()).stream
    except (FormatError, KeyError):
        return None
    return stream.removeprefix("case/") if stream.startswith("case/") else None
