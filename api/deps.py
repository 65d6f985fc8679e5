"""Dependencies: the open ledger, who is asking, and whether their role may."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.core import Ledger
from ledger.groupcommit import GroupCommitter
from ledger.policy import Policy
from ledger.replay import Replay
from ledger.report import replay_case
from ledger.tokens import Principal, Role, TokenStore
from ledger.vault import Vault
from ledger.verify import Envelope

from .settings import Settings


@dataclass
class RateLimiter:
    """A token bucket per API token name (in this process)."""

    rate: float
    burst: int
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self.buckets[key] = (tokens, now)
                return False
            self.buckets[key] = (tokens - 1, now)
            return True


@dataclass
class Server:
    settings: Settings
    ledger: Ledger
    tokens: TokenStore
    policy: Policy
    committer: GroupCommitter
    limiter: RateLimiter

    def vault(self) -> Vault:
        """The ledger's vault, opened (and its master key checked) when first used."""
        return self.ledger.vault()


def read_case(srv: Server, who: Principal, case_id: str, route: str) -> list[Envelope]:
    """A case's events, read once; a panel's or auditor's read is put on the access log.

    The case is loaded first, so a read of a case that does not exist is a 404 and
    writes nothing to any access log.
    """
    envelopes = srv.ledger.case_envelopes(case_id)
    if who.role in (Role.PANEL, Role.AUDITOR):
        srv.ledger.record_access(case_id, who.name, who.role.value, route)
    return envelopes


# Async dependencies run on the event loop; sync ones would each cost every request
# a trip through the thread pool.
async def server(request: Request) -> Server:
    return server_of(request)


def server_of(request: Request) -> Server:
    srv: Server = request.app.state.server
    return srv


# Set on a request the single-append fast path (api/fastpath.py) already counted
# against its token's rate limit before handing it to the route.
RATE_COUNTED = "rate_limit_counted"
# Set, to the receipt or the refusal, on a request the fast path submitted but left to
# the route to answer (a repeat, a refusal): the route answers that, not a new submit.
SUBMITTED = "submitted"

_bearer = HTTPBearer(
    auto_error=False, description="API token from `ledger token add` or `ledger agency add`"
)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


# Each dependency FastAPI resolves costs every request some tens of µs, so a route's
# authentication is one dependency (and the bearer scheme, for OpenAPI), not a chain.
async def principal(request: Request, credentials: Credentials) -> Principal:
    srv = server_of(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    hit, who = srv.tokens.cached(credentials.credentials)
    if not hit:
        who = await run_in_threadpool(srv.tokens.lookup, credentials.credentials)
    if who is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    if not request.scope.get("state", {}).get(RATE_COUNTED) and not srv.limiter.allow(who.name):
        raise HTTPException(
            429, "rate limit exceeded for this token; slow down", headers={"Retry-After": "1"}
        )
    request.state.principal = who
    return who


def requires(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting only the given roles."""

    async def check(request: Request, credentials: Credentials) -> Principal:
        who = await principal(request, credentials)
        if who.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise HTTPException(403, f"role {who.role.value} may not do this (needs {allowed})")
        return who

    return check


Reader = Annotated[Principal, Depends(requires(Role.PANEL, Role.AUDITOR))]
Panel = Annotated[Principal, Depends(requires(Role.PANEL))]
Auditor = Annotated[Principal, Depends(requires(Role.AUDITOR))]
Agency = Annotated[Principal, Depends(requires(Role.AGENCY))]
Admin = Annotated[Principal, Depends(requires(Role.ADMIN))]
AnyRole = Annotated[Principal, Depends(principal)]
Srv = Annotated[Server, Depends(server)]


def panel_replay(
    srv: Server,
    who: Principal,
    case_id: str,
    route: str,
    as_of: datetime | None = None,
    basis: str = "recorded",
) -> Replay:
    """A panel's replay of a case: the read put on the access log (which covers decrypting
    its narrative), identifiers in the narrative masked."""
    envelopes = read_case(srv, who, case_id, route)
    return replay_case(
        srv.ledger,
        case_id,
        srv.policy,
        as_of,
        basis,
        envelopes,
        view="panel",
        reader=who.name,
        reason=route,
        recorded=True,
    )
