"""Server settings, from the environment (LEDGER_*) with safe defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from ledger.store import DEFAULT_DB


class Settings(BaseSettings):
    """Checked whole by `ledger serve` before any worker starts, so a bad value is one
    line naming its variable, not a traceback in every worker."""

    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    db: str = DEFAULT_DB
    keys: Path = Path("var/keys")
    policy: Path | None = None
    rate_limit_per_s: Annotated[float, Field(gt=0)] = 200.0  # per token, sustained
    rate_limit_burst: Annotated[int, Field(ge=1)] = 400
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1 << 20  # single event
    max_batch_bytes: Annotated[int, Field(ge=1024)] = 16 << 20
    group_commit_window_ms: Annotated[float, Field(ge=0, le=1000)] = 2.0
    group_commit_max: Annotated[int, Field(ge=1)] = 500
    integrate_every_s: Annotated[float, Field(ge=0)] = 5.0  # background integrator; 0 disables
    sweep_every_s: Annotated[float, Field(ge=0)] = 300.0  # background watchdog; 0 disables
    cors_origins: list[str] = []
    # FastAPI's OpenTelemetry: "off", or "metrics" (method, route template, status and
    # duration; never a path, query or message). See docs/OPERATIONS.md.
    telemetry: Literal["off", "metrics"] = "off"
    # Test-only: serve one corrupted proof byte on the case page, to show verification fail.
    test_tamper_proof: bool = False


class BadSetting(ValueError):
    """A LEDGER_* variable the server cannot run with."""


def settings_from_env() -> Settings:
    """The settings, or one line naming the first bad variable (its value is not
    repeated: LEDGER_DB may carry a password)."""
    try:
        return Settings()
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        name = "LEDGER_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BadSetting(f"{name}: {first['msg']}{more}") from None
    except SettingsError as e:
        found = re.search(r'field "(\w+)"', str(e))
        name = f"LEDGER_{found.group(1).upper()}" if found else "a LEDGER_* variable"
        raise BadSetting(f"{name}: cannot be parsed as JSON") from None
