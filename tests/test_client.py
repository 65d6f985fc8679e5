"""The agency client: signs, posts, and retries through failures with the same event id."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ledger.client import LedgerClient
from ledger.errors import SignatureError, ValidationError
from tests.conftest import CHILD
from tests.test_api import Api, api  # noqa: F401 - the fixture


class Flaky(httpx.BaseTransport):
    """Drops the first connections and answers 503 once, then passes requests on."""

    def __init__(self, inner: httpx.BaseTransport, drops: int, unavailable: int) -> None:
        self.inner, self.drops, self.unavailable, self.seen = inner, drops, unavailable, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.drops:
            self.drops -= 1
            raise httpx.ConnectError("connection reset")
        if self.unavailable:
            self.unavailable -= 1
            # The request reached the server and was recorded; the answer was lost.
            self.inner.handle_request(request)
            return httpx.Response(503, json={"detail": "try again"})
        return self.inner.handle_request(request)


def body(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "v": 1,
        "case_id": "CL-1",
        "event_id": "client-1",
        "type": "CHILD_SEEN",
        "occurred_at": "2024-03-03T14:05:00Z",
        "agency": "police-a",
        "actor": {"role": "officer"},
        "payload": {"child_ref": CHILD},
        "responds_to": [],
        "corrects": None,
    }
    out.update(fields)
    return out


def client(api: Api, transport: httpx.BaseTransport, token: str = "agency") -> LedgerClient:  # noqa: F811
    c = LedgerClient(
        "http://testserver", api.tokens[token], api.signers["police-a"], transport=transport
    )
    c.http.headers["content-type"] = "application/json"
    return c


def test_retries_after_lost_answers_record_the_event_once(api: Api) -> None:  # noqa: F811
    flaky = Flaky(api.client._transport, drops=2, unavailable=1)
    c = client(api, flaky)
    receipt = c.append(body())
    assert flaky.seen == 4
    assert receipt["seq"] == 1 and receipt["duplicate"] is True  # the 503 hid a success
    events = api.client.get("/v1/cases/CL-1/events", headers=api.auth("panel")).json()["events"]
    assert [e["event_id"] for e in events] == ["client-1"]


def test_refusals_are_raised_not_retried(api: Api) -> None:  # noqa: F811
    flaky = Flaky(api.client._transport, drops=0, unavailable=0)
    c = client(api, flaky)
    with pytest.raises(ValidationError, match="422"):
        c.append(body(type="NOT_A_TYPE", event_id="client-2"))
    with pytest.raises(SignatureError, match="403"):
        c.append(body(agency="csc-b", event_id="client-3"))
    assert flaky.seen == 2


def test_an_agency_adds_a_subject_remotely(api: Api) -> None:  # noqa: F811
    from ledger.client import add_subject

    transport = api.client._transport
    person = {"name": "Remy Achterberg", "dob": "2011-05-06", "borough": "Lambeth"}
    ref = add_subject("http://testserver", api.tokens["agency"], person, transport=transport)
    again = add_subject("http://testserver", api.tokens["agency"], person, transport=transport)
    assert ref == again and ref.startswith("child_")
    with pytest.raises(SignatureError, match="403"):
        add_subject("http://testserver", api.tokens["panel"], person, transport=transport)
    with pytest.raises(ValidationError, match="422"):
        add_subject("http://testserver", api.tokens["agency"], {"name": ""}, transport=transport)


def test_subject_add_over_http_needs_a_token_and_a_reachable_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ledger.cli import main

    argv = ["subject", "add", "--name", "Remy Achterberg", "--server", "http://127.0.0.1:9"]
    assert main(argv) == 2
    assert "--token" in capsys.readouterr().err
    assert main([*argv, "--token", "t"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the ledger" in err and len(err.strip().splitlines()) == 1
