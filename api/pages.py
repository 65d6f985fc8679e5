"""The inquiry panel's web view: sign-in, case list, case page (timeline, chronology, verify).

Server-rendered with Jinja2; a little plain JavaScript draws nothing the server has
not drawn, it only verifies in the browser. The session cookie holds the panel's
token (HttpOnly, SameSite=Strict); every form carries a CSRF token matched against
a second cookie. Every case page view is recorded in the case's access log.
"""

from __future__ import annotations

import copy
import hmac
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ledger.bundle import export_bundle
from ledger.clock import LONDON, parse_instant
from ledger.errors import LedgerError, NotFound
from ledger.replay import Replay, agency_label
from ledger.report import case_summaries, replay_dict, to_csv, to_html
from ledger.tokens import Principal, Role

from .deps import Server, panel_replay, read_case
from .problems import for_ledger_error

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).resolve().parent
_ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html", "j2"])
)
SESSION, CSRF = "ledger_session", "ledger_csrf"


def _server(request: Request) -> Server:
    srv: Server = request.app.state.server
    return srv


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_ENV.get_template(name).render(**context), status_code=status)


def _panel(request: Request) -> Principal | None:
    token = request.cookies.get(SESSION)
    who = _server(request).tokens.lookup(token) if token else None
    return who if who is not None and who.role is Role.PANEL else None


def _csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF, "")
    return bool(cookie) and hmac.compare_digest(cookie, form.get("csrf", ""))


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body).items()}


def _signin_page(error: str | None = None, status: int = 200) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    response = _page("signin.html.j2", status, csrf=csrf, error=error)
    response.set_cookie(CSRF, csrf, httponly=True, samesite="strict", path="/")
    return response


@router.get("/signin", response_class=HTMLResponse)
async def signin_form() -> HTMLResponse:
    return _signin_page()


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await _form(request)
    if not _csrf_ok(request, form):
        return _signin_page("The form expired; please sign in again.", 400)
    token = form.get("token", "").strip()
    who = _server(request).tokens.lookup(token) if token else None
    if who is None or who.role is not Role.PANEL:
        return _signin_page("That is not an active panel token.", 401)
    response = RedirectResponse("/cases", status_code=303)
    response.set_cookie(
        SESSION,
        token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
        max_age=8 * 3600,
    )
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    form = await _form(request)
    if not _csrf_ok(request, form):
        return PlainTextResponse("bad form", status_code=400)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION, path="/")
    return response


def _session_csrf(request: Request, response: HTMLResponse, csrf: str) -> HTMLResponse:
    if request.cookies.get(CSRF) != csrf:
        response.set_cookie(CSRF, csrf, httponly=True, samesite="strict", path="/")
    return response


@router.get("/", response_class=HTMLResponse)
async def home() -> Response:
    return RedirectResponse("/cases", status_code=303)


@router.get("/cases", response_class=HTMLResponse)
async def case_list(
    request: Request,
    borough: str = "",
    agency: str = "",
    breached: str = "",
    start: str = "",
    end: str = "",
    sort: str = "case_id",
) -> Response:
    who = _panel(request)
    if who is None:
        return RedirectResponse("/signin", status_code=303)
    srv = _server(request)

    def work() -> list[dict[str, Any]]:
        wanted = {"yes": True, "no": False}.get(breached)
        rows = case_summaries(
            srv.ledger,
            srv.policy,
            borough or None,
            agency or None,
            wanted,
            start or None,
            end or None,
        )
        for c in rows:
            c["breached"], c["open"] = c["breached_obligations"], c["open_obligations"]
        key = (
            sort
            if sort in ("case_id", "events", "breached", "first_occurred_at", "last_occurred_at")
            else "case_id"
        )
        return sorted(rows, key=lambda c: c[key], reverse=key in ("events", "breached"))

    rows = await run_in_threadpool(work)
    csrf = request.cookies.get(CSRF) or secrets.token_urlsafe(24)
    filters = {
        "borough": borough,
        "agency": agency,
        "breached": breached,
        "start": start,
        "end": end,
        "sort": sort,
    }
    return _session_csrf(
        request, _page("cases.html.j2", cases=rows, who=who, csrf=csrf, filters=filters), csrf
    )


LANE_H, TOP, LEFT, WIDTH = 56, 40, 190, 900


def timeline(r: Replay) -> dict[str, Any]:
    """Geometry for the SVG timeline: one lane per agency, marks and obligation bars."""
    events = [e for e in r.events if e.type not in ("ACCESS_READ",)]
    if not events:
        return {
            "lanes": [],
            "marks": [],
            "bars": [],
            "height": 80,
            "width": WIDTH + LEFT + 20,
            "ticks": [],
        }
    lanes = list(dict.fromkeys(e.agency for e in events))
    for o in r.obligations:
        if o.owing_agency not in lanes:
            lanes.append(o.owing_agency)
    t0 = min(e.occurred for e in events)
    t1 = max(
        [e.occurred for e in events]
        + [min(o.due, r.as_of) for o in r.obligations]
        + [t0 + timedelta(days=1)]
    )
    span: float = (t1 - t0).total_seconds() or 1.0

    def x(moment: datetime) -> float:
        return round(float(LEFT + (moment - t0).total_seconds() / span * WIDTH), 1)

    def y(agency: str) -> int:
        return TOP + lanes.index(agency) * LANE_H

    marks = [
        {
            "x": x(e.occurred),
            "y": y(e.agency) + 18,
            "id": e.event_id,
            "label": f"{e.occurred.astimezone(LONDON):%d %b %Y %H:%M} "
            f"{e.type.replace('_', ' ').lower()} ({e.agency})",
        }
        for e in events
    ]
    first = (
        (r.stall.get("first_stall") or {}).get("trigger_event_id"),
        (r.stall.get("first_stall") or {}).get("rule"),
    )
    bars = []
    for o in r.obligations:
        end = o.discharged_at or (r.as_of if o.status == "breached" else o.due)
        end = max(end, o.start)
        bars.append(
            {
                "x": x(o.start),
                "w": max(round(x(min(end, t1)) - x(o.start), 1), 3),
                "y": y(o.owing_agency) + 34,
                "status": o.status,
                "rule": o.rule.id,
                "first": (o.trigger.event_id, o.rule.id) == first,
                "label": f"{o.rule.id} {o.rule.title}: {o.status.replace('_', ' ')}, due "
                f"{o.due.astimezone(LONDON):%d %b %Y %H:%M}",
            }
        )
    ticks = []
    step = max(span / 6, 1)
    for n in range(7):
        moment = t0 + timedelta(seconds=step * n)
        ticks.append({"x": x(moment), "label": f"{moment.astimezone(LONDON):%d %b %Y}"})
    lane_rows = [
        {
            "agency": a,
            "y": y(a),
            "label": agency_label(a, r.kinds[a]) if a in r.kinds else a,
        }
        for a in lanes
    ]
    return {
        "lanes": lane_rows,
        "marks": marks,
        "bars": bars,
        "ticks": ticks,
        "height": TOP + len(lanes) * LANE_H + 30,
        "width": WIDTH + LEFT + 20,
    }


@router.get("/cases/{case_id}", response_class=HTMLResponse)
async def case_page(request: Request, case_id: str, as_of: str = "") -> Response:
    who = _panel(request)
    if who is None:
        return RedirectResponse("/signin", status_code=303)
    srv = _server(request)
    try:
        moment = parse_instant(as_of, "as_of") if as_of else None
    except LedgerError as e:
        return PlainTextResponse(str(e), status_code=400)
    if moment is not None and len(as_of) == 10:
        moment = moment.replace(hour=23, minute=59, second=59)  # the whole day

    def work() -> dict[str, Any]:
        r = panel_replay(srv, who, case_id, "page", moment, "occurred" if moment else "recorded")
        return {
            "r": r,
            "data": replay_dict(r),
            "timeline": timeline(r),
            "log_key": srv.ledger.log_verifier().encode(),
        }

    try:
        ctx = await run_in_threadpool(work)
    except NotFound as e:
        return _page("error.html.j2", 404, message=str(e))
    csrf = request.cookies.get(CSRF) or secrets.token_urlsafe(24)
    date_value = moment.astimezone(LONDON).date().isoformat() if moment else ""
    return _session_csrf(
        request,
        _page("case.html.j2", case_id=case_id, who=who, csrf=csrf, date_value=date_value, **ctx),
        csrf,
    )


@router.get("/cases/{case_id}/bundle.json")
async def page_bundle(request: Request, case_id: str) -> Response:
    who = _panel(request)
    if who is None:
        return JSONResponse({"detail": "sign in"}, status_code=401)
    srv = _server(request)

    def work() -> dict[str, Any]:
        read_case(srv, who, case_id, "page.bundle")
        bundle = export_bundle(srv.ledger, case_id)
        if srv.settings.test_tamper_proof:  # test-only switch: serve one corrupted proof byte
            bundle = copy.deepcopy(bundle)
            entry = next(
                e for e in bundle["entries"] if e["stream"] == f"case/{case_id}" and e["inclusion"]
            )
            h = entry["inclusion"][0]
            entry["inclusion"][0] = ("A" if h[0] != "A" else "B") + h[1:]
        return bundle

    try:
        return JSONResponse(
            await run_in_threadpool(work),
            headers={"Content-Disposition": f'attachment; filename="{case_id}-bundle.json"'},
        )
    except LedgerError as e:
        return for_ledger_error(e)


@router.get("/cases/{case_id}/chronology.{fmt}")
async def page_chronology(request: Request, case_id: str, fmt: str) -> Response:
    who = _panel(request)
    if who is None:
        return RedirectResponse("/signin", status_code=303)
    if fmt not in ("csv", "html"):
        return PlainTextResponse("csv or html", status_code=404)
    srv = _server(request)

    def work() -> Response:
        r = panel_replay(srv, who, case_id, f"page.chronology.{fmt}")
        if fmt == "csv":
            return PlainTextResponse(
                to_csv(r),
                media_type="text/csv",
                headers={"Content-Disposition": f'attachment; filename="{case_id}-chronology.csv"'},
            )
        return HTMLResponse(to_html(r))

    try:
        return await run_in_threadpool(work)
    except NotFound as e:
        return PlainTextResponse(str(e), status_code=404)
