"""The single append, answered without FastAPI's per-request machinery.

`POST /v1/cases/{case_id}/events` is what every agency's system calls for every event,
and FastAPI's routing and dependency solving cost it more CPU than recording the
event does. This middleware answers the request that goes well (a known agency token,
a well-formed body signed as itself, accepted and newly recorded) with the same
route's code, and hands everything else to the app, body included: every refusal,
repeat and error is answered by the route exactly as before. What the fast path
already submitted, the route does not submit again: it answers the committer's
verdict, left in the request's state.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.concurrency import run_in_threadpool

from ledger.tokens import Role

from .deps import RATE_COUNTED, SUBMITTED, Server
from .middleware import ASGIApp, Receive, Scope, Send, replaying
from .routes.events import SignedEvent, receipt_out, to_submission

PATH = re.compile(r"/v1/cases/([^/]+)/events")
JSON = [(b"content-type", b"application/json")]


class SingleAppend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            PATH.fullmatch(scope["path"])
            # Under a root_path the router matches another path; a metered request
            # (LEDGER_TELEMETRY=metrics) needs the route to name its template: left to it.
            if scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and scope.get("fastapi.telemetry") is None
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        first = await receive()  # Limits (outside) hands the whole body over at once
        answered = first["type"] == "http.request" and not first.get("more_body")
        if answered:
            answered = await self._append(scope, match.group(1), first.get("body", b""), send)
        if not answered:
            await self.app(scope, replaying(first, receive), send)

    @staticmethod
    async def _append(scope: Scope, case_id: str, body: bytes, send: Send) -> bool:
        """Record and answer the request if it goes well; False leaves it to the app."""
        srv: Server = scope["app"].state.server
        token = _bearer(scope)  # Limits let through one Content-Type, application/json
        if token is None:
            return False
        hit, who = srv.tokens.cached(token)
        if not hit:
            # Kept answers last two seconds: under load every agency's token drops out
            # of the cache that often, and handing all its requests meanwhile to the
            # route cost far more than the lookup the route would make.
            try:
                who = await run_in_threadpool(srv.tokens.lookup, token)
            except Exception:  # the tokens database failed: the route answers it
                return False
        if who is None or who.role is not Role.AGENCY:
            return False
        try:  # parsed as the route has it parsed (json.loads), checked by its own code
            event = SignedEvent.model_validate(json.loads(body))
            submission = to_submission(event, who, case_id)
        except Exception:  # whatever is wrong, the route finds it and answers its problem
            return False
        if not srv.limiter.allow(who.name):
            return False
        state = scope.setdefault("state", {})
        state[RATE_COUNTED] = True  # if the route answers after all, it counts it no more
        try:
            receipt = await srv.committer.submit_awaitable(submission)
        except Exception as e:  # refused, or the database failed: nothing was written
            state[SUBMITTED] = e  # the route answers it as its own, without submitting again
            return False
        if receipt.duplicate:
            state[SUBMITTED] = receipt  # the route adds the leaf index, as for any repeat
            return False
        content = receipt_out(srv, receipt).model_dump_json().encode()
        headers: list[Any] = [*JSON, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        return True


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials if scheme.lower() == "bearer" and credentials else None
    return None
