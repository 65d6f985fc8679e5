"""Administration: agencies and their keys, API tokens."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ..deps import Admin, Srv
from . import json_example

router = APIRouter(tags=["admin"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "panel-lambeth-cspr", "role": "panel"}]},
    )
    name: str = Field(min_length=1, max_length=120)
    role: Literal["panel", "auditor", "admin", "agency"]
    agency: str | None = None


@router.get(
    "/v1/agencies",
    summary="Registered agencies and their keys",
    responses=json_example(
        [
            {
                "agency": "met-police-south",
                "kind": "police",
                "borough": "Lambeth",
                "name": "Metropolitan Police, South Area BCU",
                "keys": {
                    "2aa025cc...": {
                        "public_key": "C9drHM3p...=",
                        "added_at": "2026-11-25T11:46:03.675437Z",
                        "revoked_at": None,
                    }
                },
            }
        ]
    ),
)
async def agencies(who: Admin, srv: Srv) -> list[dict[str, Any]]:
    def work() -> list[dict[str, Any]]:
        out = []
        for agency_id, a in sorted(srv.ledger.agencies().items()):
            out.append(
                {
                    "agency": agency_id,
                    "kind": a.kind,
                    "borough": a.borough,
                    "name": a.name,
                    "keys": a.keys,
                }
            )
        return out

    return await run_in_threadpool(work)


@router.post("/v1/tokens", status_code=201, summary="Issue an API token (shown once)")
async def issue_token(request: TokenRequest, who: Admin, srv: Srv) -> dict[str, str]:
    token = await run_in_threadpool(
        srv.ledger.issue_token, request.name, request.role, request.agency
    )
    return {"name": request.name, "role": request.role, "token": token}


@router.delete("/v1/tokens/{name}", status_code=204, summary="Revoke an API token")
async def revoke_token(
    name: Annotated[str, PathParam(examples=["panel-lambeth-cspr"])], who: Admin, srv: Srv
) -> Response:
    await run_in_threadpool(srv.tokens.revoke, name)
    return Response(status_code=204)
