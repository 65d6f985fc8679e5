"""Liveness and database reachability, without a token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..deps import Srv
from ..problems import problem
from . import json_example

router = APIRouter(tags=["health"])


@router.get(
    "/v1/health",
    summary="Process and database health",
    responses=json_example(
        {
            "status": "ok",
            "database": "ok",
            "events": 67,
            "group_commit": {"batches": 12, "events": 340},
        }
    ),
)
async def health(srv: Srv) -> Any:
    try:
        events = await run_in_threadpool(srv.ledger.store.catalog.count_events)
    except Exception:
        return problem(
            503, "the database is unreachable", "store-unavailable", {"Retry-After": "5"}
        )
    return JSONResponse(
        {
            "status": "ok",
            "database": "ok",
            "events": events,
            "group_commit": {"batches": srv.committer.batches, "events": srv.committer.events},
        }
    )
