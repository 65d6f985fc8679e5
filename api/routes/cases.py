"""Reading cases: listings, events, replay, chronology, stalls and bundles.

Every panel or auditor read of a case is put on record in the case's access
log (a ledger-signed, hash-chained stream) before the answer is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse

from ledger.bundle import export_bundle
from ledger.replay import replay
from ledger.report import replay_dict, to_csv, to_html
from ledger.tokens import Principal, Role

from ..deps import Panel, Reader, Server, Srv, requires

router = APIRouter(tags=["cases"])
CaseReader = Annotated[Principal, Depends(requires(Role.PANEL, Role.AUDITOR, Role.AGENCY))]


def _record(srv: Server, who: Principal, case_id: str, route: str) -> None:
    srv.ledger.case_envelopes(case_id)  # 404 before anything is recorded
    if who.role in (Role.PANEL, Role.AUDITOR):
        srv.ledger.record_access(case_id, who.name, who.role.value, route)


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(
            400, f"as_of: {text!r} is not a time like 2024-03-04T09:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/v1/cases", summary="List cases with their agencies and obligation counts")
async def list_cases(
    who: CaseReader,
    srv: Srv,
    borough: str | None = None,
    agency: str | None = None,
    breached: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        kinds = srv.ledger.agency_kinds()
        out = []
        for c in srv.ledger.cases():
            if who.role is Role.AGENCY and who.agency not in c["agencies"]:
                continue
            if (borough and borough not in c["boroughs"]) or (
                agency and agency not in c["agencies"]
            ):
                continue
            r = replay(
                c["case_id"], srv.ledger.case_envelopes(c["case_id"]), kinds, srv.policy, lexicon=[]
            )
            statuses = [o.status for o in r.obligations]
            c.update(
                open_obligations=statuses.count("open"),
                breached_obligations=statuses.count("breached"),
            )
            if breached is not None and breached != bool(c["breached_obligations"]):
                continue
            out.append(c)
            if len(out) >= limit:
                break
        return out

    return await run_in_threadpool(work)


@router.get("/v1/cases/{case_id}/events", summary="A case's stored events (role-filtered)")
async def case_events(case_id: str, who: CaseReader, srv: Srv) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        _record(srv, who, case_id, "events")
        events = []
        for e in srv.ledger.case_envelopes(case_id):
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
            events.append(item)
        return {"case_id": case_id, "events": events}

    return await run_in_threadpool(work)


@router.get("/v1/cases/{case_id}/replay", summary="The case as of an instant, with analysis")
async def case_replay(
    case_id: str,
    who: Panel,
    srv: Srv,
    as_of: str | None = None,
    basis: Literal["recorded", "occurred"] = "recorded",
) -> dict[str, Any]:
    moment = _instant(as_of)

    def work() -> dict[str, Any]:
        _record(srv, who, case_id, "replay")
        return replay_dict(
            replay(
                case_id,
                srv.ledger.case_envelopes(case_id),
                srv.ledger.agency_kinds(),
                srv.policy,
                moment,
                basis,
            )
        )

    return await run_in_threadpool(work)


@router.get(
    "/v1/cases/{case_id}/chronology",
    summary="Multi-agency chronology",
    responses={200: {"content": {"application/json": {}, "text/csv": {}, "text/html": {}}}},
)
async def case_chronology(
    case_id: str,
    who: Panel,
    srv: Srv,
    format: Literal["json", "csv", "html"] = "json",
    as_of: str | None = None,
) -> Any:
    moment = _instant(as_of)

    def work() -> Any:
        _record(srv, who, case_id, f"chronology.{format}")
        r = replay(
            case_id,
            srv.ledger.case_envelopes(case_id),
            srv.ledger.agency_kinds(),
            srv.policy,
            moment,
        )
        if format == "csv":
            return PlainTextResponse(to_csv(r), media_type="text/csv")
        if format == "html":
            return HTMLResponse(to_html(r))
        return {"case_id": case_id, "chronology": r.chronology}

    return await run_in_threadpool(work)


@router.get("/v1/cases/{case_id}/stalls", summary="Where action stalled")
async def case_stalls(case_id: str, who: Panel, srv: Srv) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        _record(srv, who, case_id, "stalls")
        r = replay(
            case_id, srv.ledger.case_envelopes(case_id), srv.ledger.agency_kinds(), srv.policy
        )
        return {"case_id": case_id, **r.stall}

    return await run_in_threadpool(work)


@router.get("/v1/cases/{case_id}/bundle", summary="Evidence bundle, verifiable offline")
async def case_bundle(case_id: str, who: Reader, srv: Srv) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        _record(srv, who, case_id, "bundle")
        return export_bundle(srv.ledger, case_id)

    return await run_in_threadpool(work)
