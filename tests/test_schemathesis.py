"""Property-based fuzzing of the HTTP API from its own OpenAPI document (bounded)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import Settings
from ledger.core import Ledger
from ledger.demo import load_demo

TOKENS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{d}/fuzz.sqlite"
    ledger = Ledger.open(url, d / "keys")
    load_demo(ledger, "fuzz.test/log")
    for role in ("panel", "auditor", "admin"):
        TOKENS[role] = ledger.tokens.issue(f"fuzz-{role}", role)
    TOKENS["agency"] = ledger.tokens.issue("fuzz-agency", "agency", "met-police-south")
    ledger.checkpoint()
    ledger.close()
    app = create_app(
        Settings(
            db=url,
            keys=d / "keys",
            integrate_every_s=0,
            sweep_every_s=0,
            rate_limit_per_s=100_000,
            rate_limit_burst=100_000,
        )
    )
    with TestClient(app):  # runs the lifespan: the ledger stays open for the fuzzing
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


SELECTED = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_api_never_fails_and_matches_its_schema(api_schema: Any) -> None:
    """Every operation, a bounded number of generated requests per role: no 5xx, and
    every response (status, media type, body) as the OpenAPI document promises."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: Any) -> None:
            for role in ("panel", "auditor", "agency", "admin"):
                case.call_and_validate(
                    headers={"Authorization": f"Bearer {TOKENS[role]}"}, checks=SELECTED
                )

        fuzz()
