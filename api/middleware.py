"""Raw ASGI middleware: body-size and media-type limits before parsing; security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .problems import problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    ),
    (b"cache-control", b"no-store"),
]


async def _problem(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    # The same problem document as every other error; SecurityHeaders (outermost) adds
    # the security headers.
    await problem(status, detail)(scope, receive, send)


class Limits:
    """Refuse oversized bodies (413) and non-JSON writes (415) before any parsing."""

    def __init__(self, app: ASGIApp, max_body: int, max_batch: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_batch = max_batch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or []
        headers = dict(raw_headers)
        limit = self.max_batch if scope["path"].endswith(":batch") else self.max_body
        if sum(name == b"content-type" for name, _ in raw_headers) > 1:
            # Which one counts differs along the way (the last here, the first where
            # the body is parsed): a body is sent as one type.
            await _problem(scope, receive, send, 415, "send one Content-Type header")
            return
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        forms = not scope["path"].startswith("/v1/")  # the panel pages post HTML forms
        allowed = (
            (b"application/json", b"application/x-www-form-urlencoded")
            if forms
            else (b"application/json",)
        )
        if ctype not in allowed:
            await _problem(scope, receive, send, 415, "send the body as application/json")
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _problem(
                scope,
                receive,
                send,
                413,
                f"body of {int(length)} bytes exceeds the limit of {limit}",
            )
            return
        # Read the whole body here, counting, rather than failing inside the app's
        # own read: FastAPI turns any error there into a 400, hiding the 413.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away; there is no one to answer
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _problem(scope, receive, send, 413, f"body exceeds the limit of {limit}")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replaying(message, receive), send)


def replaying(message: Message, receive: Receive) -> Receive:
    """`receive` for an app after `message` was read from the real one: that message
    again first, then whatever comes next (a disconnect)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return message

    return replay


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *[(k, v) for k, v in SECURITY_HEADERS if k not in names],
                ]
            await send(message)

        await self.app(scope, receive, with_headers)
