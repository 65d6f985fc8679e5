"""Server settings, from the environment (LEDGER_*) with safe defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from ledger.store import DEFAULT_DB


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGER_", extra="ignore")

    db: str = DEFAULT_DB
    keys: Path = Path("var/keys")
    policy: Path | None = None
    rate_limit_per_s: float = 200.0  # per token, sustained
    rate_limit_burst: int = 400
    max_body_bytes: int = 1 << 20  # single event
    max_batch_bytes: int = 16 << 20
    max_batch_events: int = 1000
    group_commit_window_ms: float = 2.0
    group_commit_max: int = 500
    integrate_every_s: float = 5.0  # background integrator; 0 disables
    sweep_every_s: float = 300.0  # background watchdog; 0 disables
    cors_origins: list[str] = []
    # Test-only: serve one corrupted proof byte on the case page, to show verification fail.
    test_tamper_proof: bool = False
