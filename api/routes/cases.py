"""Reading cases: listings, events, replay, chronology, stalls and bundles.

Every panel or auditor read of a case is put on record in the case's access
log (a ledger-signed, hash-chained stream) before the answer is sent. The
endpoints are plain functions: FastAPI runs them on its threadpool, off the
event loop, since each reads the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from ledger.bundle import export_bundle
from ledger.clock import parse_instant
from ledger.report import case_summaries, replay_case, replay_dict, to_csv, to_html
from ledger.tokens import Principal, Role

from ..deps import Panel, Reader, Srv, panel_replay, read_case, requires
from . import json_example

router = APIRouter(tags=["cases"])
CaseReader = Annotated[Principal, Depends(requires(Role.PANEL, Role.AUDITOR, Role.AGENCY))]


def _instant(text: str | None) -> datetime | None:
    return None if text is None else parse_instant(text, "as_of")


@router.get(
    "/v1/cases",
    summary="List cases with their agencies and obligation counts",
    responses=json_example(
        [
            {
                "case_id": "DEMO-LAM-0001",
                "events": 8,
                "agencies": ["met-police-south"],
                "boroughs": ["Lambeth"],
                "first_occurred_at": "2024-03-03T14:05:00Z",
                "last_occurred_at": "2025-04-19T09:00:00Z",
                "last_recorded_at": "2026-11-25T11:46:03.677086Z",
                "open_obligations": 0,
                "breached_obligations": 3,
            }
        ]
    ),
)
def list_cases(
    who: CaseReader,
    srv: Srv,
    borough: str | None = None,
    agency: str | None = None,
    breached: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    own = who.agency if who.role is Role.AGENCY else None
    return case_summaries(
        srv.ledger, srv.policy, borough, agency, breached, involving=own, limit=limit
    )


@router.get(
    "/v1/cases/{case_id}/events",
    summary="A case's stored events (role-filtered)",
    responses=json_example(
        {
            "case_id": "DEMO-LAM-0001",
            "events": [
                {
                    "seq": 1,
                    "event_id": "DEMO-LAM-0001-001",
                    "type": "DISCLOSURE_RECEIVED",
                    "agency": "met-police-south",
                    "event_hash": "65ce5af2...",
                    "prev_hash": None,
                    "recorded_at": "2026-11-25T11:46:03.677086Z",
                    "envelope": "{...}",
                }
            ],
        }
    ),
)
def case_events(case_id: str, who: CaseReader, srv: Srv) -> dict[str, Any]:
    events = []
    envelopes = read_case(srv, who, case_id, "events")
    texts: dict[str, dict[str, str]] = {}
    if who.role is Role.AGENCY:  # an agency reads back the narrative it wrote
        texts = srv.ledger.vault().narrative_view(
            case_id, envelopes, "agency", who.name, "events", agency=who.agency
        )  # an agency's read is not otherwise logged: this decryption is
    for e in envelopes:
        if who.role is Role.AGENCY and e.agency != who.agency:
            continue
        item: dict[str, Any] = {
            "seq": e.seq,
            "event_hash": e.event_hash,
            "recorded_at": e.recorded_at,
            "prev_hash": e.prev_hash,
            "event_id": e.event_id,
            "type": e.type,
            "agency": e.agency,
        }
        if who.role is Role.AUDITOR:
            item["occurred_at"] = e.body["occurred_at"]  # metadata only
        else:
            item["envelope"] = e.raw.decode("utf-8")
        if e.event_id in texts:
            item["narrative"] = texts[e.event_id]
        events.append(item)
    return {"case_id": case_id, "events": events}


@router.get(
    "/v1/cases/{case_id}/replay",
    summary="The case as of an instant, with analysis",
    responses=json_example(
        {
            "case_id": "DEMO-LAM-0001",
            "as_of": "2026-11-25T12:00:00+00:00",
            "basis": "recorded",
            "policy": {"id": "response-ledger-default@2026.1", "hash": "efef66da..."},
            "chronology": [],
            "obligations": [],
            "stall": {"first_stall": None},
            "flags": [],
        }
    ),
)
def case_replay(
    case_id: str,
    who: Panel,
    srv: Srv,
    as_of: str | None = None,
    basis: Literal["recorded", "occurred"] = "recorded",
) -> dict[str, Any]:
    moment = _instant(as_of)

    return replay_dict(panel_replay(srv, who, case_id, "replay", moment, basis))


@router.get(
    "/v1/cases/{case_id}/chronology",
    summary="Multi-agency chronology",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "case_id": "DEMO-LAM-0001",
                        "chronology": [
                            {
                                "date_time": "03 Mar 2024 14:05",
                                "agency": "met-police-south",
                                "event": "Disclosure received",
                                "action": "",
                                "outcome": "",
                            }
                        ],
                    }
                },
                "text/csv": {"example": "date_time,agency_label,source,event,action,outcome,..."},
                "text/html": {"example": '<!doctype html><html lang="en">...</html>'},
            }
        }
    },
)
def case_chronology(
    case_id: str,
    who: Panel,
    srv: Srv,
    format: Literal["json", "csv", "html"] = "json",
    as_of: str | None = None,
) -> Any:
    moment = _instant(as_of)

    r = panel_replay(srv, who, case_id, f"chronology.{format}", moment)
    if format == "csv":
        return PlainTextResponse(to_csv(r), media_type="text/csv")
    if format == "html":
        return HTMLResponse(to_html(r))
    return {"case_id": case_id, "chronology": r.chronology}


@router.get(
    "/v1/cases/{case_id}/stalls",
    summary="Where action stalled",
    responses=json_example(
        {
            "case_id": "DEMO-LAM-0001",
            "first_stall": {
                "rule": "RS10",
                "sentence": "Police (met-police-south) did not record the crime "
                "within 24 hours of the rape disclosure on 3 March 2024: never "
                "done (412 days)",
            },
            "longest_silence": {"days": 363.0},
            "agency_delays": [],
            "episodes": [],
        }
    ),
)
def case_stalls(case_id: str, who: Panel, srv: Srv) -> dict[str, Any]:
    envelopes = read_case(srv, who, case_id, "stalls")
    r = replay_case(srv.ledger, case_id, srv.policy, envelopes=envelopes)
    return {"case_id": case_id, **r.stall}


@router.get(
    "/v1/cases/{case_id}/bundle",
    summary="Evidence bundle, verifiable offline",
    responses=json_example(
        {
            "format": "response-ledger-bundle/v1",
            "case_id": "DEMO-LAM-0001",
            "log": {
                "origin": "response-ledger.local/log",
                "verifier_key": "response-ledger.local/log+8856b7f7+AT...",
            },
            "checkpoint": "response-ledger.local/log\n67\n...",
            "tree_size": 67,
            "entries": [],
        }
    ),
)
def case_bundle(case_id: str, who: Reader, srv: Srv) -> dict[str, Any]:
    read_case(srv, who, case_id, "bundle")
    return export_bundle(srv.ledger, case_id)
