"""The FastAPI application: agencies append, panels read, auditors check.

`create_app()` opens the ledger named by the settings once per process, starts
the group committer and, if configured, the background integrator and watchdog.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from ledger.core import Ledger
from ledger.groupcommit import GroupCommitter
from ledger.policy import load_policy

from . import background, pages, problems
from .deps import RateLimiter, Server
from .fastpath import SingleAppend
from .middleware import Limits, SecurityHeaders
from .routes import admin, cases, events, health, log, subjects
from .settings import Settings


def telemetry(mode: str) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry, only as far as the operator chose.

    FastAPI reports to whatever provider the process has, one an agent installs
    included. Its spans carry each request's path and query, which name cases and
    subjects; its logs carry the message and stack of any unhandled exception, which
    can quote what was posted. None of that may leave the ledger; nor may it become a
    second, unsigned record of who read which case. Request metrics name only the
    route template.
    """
    config: TelemetryConfig = {
        "tracing": False,
        "operation_spans": False,
        "logs": False,
        "metrics": mode == "metrics",
    }
    if mode == "off":
        config["auto_configure"] = False  # no exporters from FASTAPI_OTEL_* either
    return config


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger = Ledger.open(settings.db, settings.keys, create=False)
        policy = load_policy(settings.policy)
        committer = GroupCommitter(
            ledger, settings.group_commit_max, settings.group_commit_window_ms / 1000
        )
        app.state.server = Server(
            settings,
            ledger,
            ledger.tokens,
            policy,
            committer,
            RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
        )
        stop = threading.Event()
        chores = background.start(ledger, policy, settings, stop)  # none in a supervised worker
        try:
            yield
        finally:
            background.finish(stop, chores)
            committer.close()
            ledger.close()

    app = FastAPI(
        title="Response Ledger",
        version="1",
        summary="Tamper-evident record of how agencies respond to child-protection cases",
        description="Agencies append signed events; panels replay cases; auditors verify. "
        "Errors are RFC 9457 application/problem+json.",
        lifespan=lifespan,
        telemetry=telemetry(settings.telemetry),
    )
    problems.install(app)
    for module in (events, cases, log, admin, health, subjects):
        app.include_router(module.router, responses=problems.ERROR_RESPONSES)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    # Innermost: inside Limits, which reads the body first, and CORS, whose headers its
    # answers need as much as the route's.
    app.add_middleware(SingleAppend)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Limits, max_body=settings.max_body_bytes, max_batch=settings.max_batch_bytes)
    app.add_middleware(SecurityHeaders)
    return app
