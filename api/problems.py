"""RFC 9457 problem details: every error leaves the API as application/problem+json.

Each ledger error class maps to one status, in ledger.errors.HTTP_STATUS, which the
agency client reads the other way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import HTTP_STATUS, DamagedRecord, LedgerError
from ledger.verify import FormatError

PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorised",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Server error",
    503: "Service unavailable",
}


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:response-ledger:problem:conflict",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "event id met-2024-000123 is already recorded "
                    "(case/C-1 seq 9) with a different body",
                }
            ]
        },
    )
    type: str
    title: str
    status: int
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemDetails, "content": {PROBLEM: {}}, "description": TITLES[code]}
    for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}


def problem(
    status: int,
    detail: str,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"urn:response-ledger:problem:{kind}" if kind else "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def for_ledger_error(e: LedgerError) -> JSONResponse:
    for cls, status, kind in HTTP_STATUS:
        if isinstance(e, cls):
            headers = {"Retry-After": "1"} if status == 503 else None
            return problem(status, str(e), kind, headers)
    return problem(400, str(e), "refused")


def install(app: FastAPI) -> None:
    @app.exception_handler(LedgerError)
    async def ledger_error(_: Request, e: LedgerError) -> JSONResponse:
        return for_ledger_error(e)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid-request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return problem(e.status_code, str(e.detail), None, dict(e.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        from eventsourcing.persistence import PersistenceError

        if isinstance(e, PersistenceError):
            return problem(
                503,
                "database unavailable; nothing was written, safe to retry",
                "store-unavailable",
                {"Retry-After": "1"},
            )
        if isinstance(e, FormatError):  # stored bytes no envelope can be read from
            return problem(500, str(DamagedRecord("in this ledger", e)), "integrity")
        return problem(500, "unexpected server error", "server-error")
