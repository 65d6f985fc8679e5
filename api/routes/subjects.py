"""Subjects as a role may see them: panels get age bands and boroughs, auditors metadata.

Names, dates of birth and addresses never leave the server over HTTP; the operator
holding the master key reads them with `ledger subject show`. Every decryption a
panel's read causes is put on the access log, with the reason given.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ledger.tokens import Role

from ..deps import Reader, Srv
from . import json_example

router = APIRouter(tags=["subjects"])


@router.get(
    "/v1/subjects/{ref}",
    summary="A subject in the vault, as the caller's role may see it",
    responses=json_example(
        {"ref": "child_7Qm2…", "kind": "child", "age_band": "13-15", "borough": "Lambeth"}
    ),
)
async def subject(
    ref: str,
    who: Reader,
    srv: Srv,
    reason: Annotated[str, Query(min_length=3, max_length=500, description="why you need it")],
) -> dict[str, Any]:
    from ledger.vault import Vault

    view = "panel" if who.role is Role.PANEL else "auditor"
    return await run_in_threadpool(lambda: Vault(srv.ledger).view(ref, view, who.name, reason))
