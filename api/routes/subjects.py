"""Subjects over HTTP: agencies hand identities to the vault; each role sees what it may.

An agency reads back in full only the identities it supplied; a panel gets an age band
and a borough; an auditor metadata. Every decryption a read causes is put on the access
log, with the reason given.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from ledger.tokens import Principal, Role

from ..deps import Agency, Srv, requires
from . import json_example

router = APIRouter(tags=["subjects"])
SubjectReader = Annotated[Principal, Depends(requires(Role.PANEL, Role.AUDITOR, Role.AGENCY))]


class NewSubject(BaseModel):
    """A person's identifying data, sealed on arrival; only the reference comes back."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    dob: date | None = None
    address: str | None = Field(default=None, max_length=500)
    borough: str | None = Field(default=None, max_length=100)
    kind: Literal["child", "person", "staff"] = "child"


@router.post(
    "/v1/subjects",
    status_code=201,
    summary="Seal a person's identity in the vault; returns their pseudonymous reference",
    responses=json_example({"ref": "child_az37mcqnpcpq3uc4kibmd4e5j6"}, status=201),
)
async def add_subject(subject: NewSubject, who: Agency, srv: Srv) -> Any:
    def work() -> str:
        return srv.vault().add(
            subject.name,
            subject.dob.isoformat() if subject.dob else None,
            subject.address,
            subject.kind,
            subject.borough,
            supplier=who.agency,
        )

    return {"ref": await run_in_threadpool(work)}


@router.get(
    "/v1/subjects/{ref}",
    summary="A subject in the vault, as the caller's role may see it",
    responses=json_example(
        {
            "ref": "child_az37mcqnpcpq3uc4kibmd4e5j6",
            "kind": "child",
            "age_band": "13-15",
            "borough": "Lambeth",
        }
    ),
)
async def subject(
    ref: str,
    who: SubjectReader,
    srv: Srv,
    reason: Annotated[str, Query(min_length=3, max_length=500, description="why you need it")],
) -> dict[str, Any]:
    def work() -> dict[str, Any]:
        return srv.vault().view(ref, who.role.value, who.name, reason, agency=who.agency)

    return await run_in_threadpool(work)
