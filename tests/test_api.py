"""The HTTP API on both stores: roles on every route, signed appends, errors as problems."""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from ledger.audit import audit
from ledger.canonical import canonical
from ledger.core import Ledger
from ledger.keys import Signer, load_key_file
from tests.conftest import CHILD


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]
    signers: dict[str, Signer]
    url: str
    keys: Path
    counter: int = 0

    def auth(self, role: str | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    def signed(
        self,
        agency: str = "police-a",
        case_id: str = "C-1",
        signer: Signer | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        self.counter += 1
        signer = signer or self.signers[agency]
        body: dict[str, Any] = {
            "v": 1,
            "case_id": case_id,
            "event_id": f"api-{self.counter:05d}",
            "type": "CHILD_SEEN",
            "occurred_at": "2024-03-03T14:05:00Z",
            "agency": agency,
            "actor": {"role": "officer"},
            "payload": {"child_ref": CHILD},
            "responds_to": [],
            "corrects": None,
            "key_id": signer.key_id,
        }
        body.update(fields)
        return {"body": body, "sig": base64.b64encode(signer.sign_body(canonical(body))).decode()}

    def post(self, event: dict[str, Any], role: str = "agency") -> Any:
        return self.client.post(
            f"/v1/cases/{event['body']['case_id']}/events", json=event, headers=self.auth(role)
        )


def quiet(db_url: str, keys: Path, **extra: Any) -> Settings:
    """Settings for a test app: no background integrator or sweep."""
    return Settings(db=db_url, keys=keys, integrate_every_s=0, sweep_every_s=0, **extra)


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[Api]:
    keys = tmp_path / "keys"
    ledger = Ledger.open(db_url, keys)
    ledger.init("api.test/log")
    signers = {}
    for agency, kind in (("police-a", "police"), ("csc-b", "csc")):
        _, path = ledger.register_agency(agency, kind, borough="Lambeth")
        assert path is not None
        signers[agency] = load_key_file(path)
    tokens = {
        "agency": ledger.tokens.issue("agency:police-a", "agency", "police-a"),
        "agency-b": ledger.tokens.issue("agency:csc-b", "agency", "csc-b"),
        "panel": ledger.tokens.issue("panel-1", "panel"),
        "auditor": ledger.tokens.issue("auditor-1", "auditor"),
        "admin": ledger.tokens.issue("admin-1", "admin"),
    }
    ledger.close()
    app = create_app(quiet(db_url, keys, rate_limit_per_s=10_000, rate_limit_burst=10_000))
    with TestClient(app, raise_server_exceptions=False) as client:
        a = Api(client, tokens, signers, db_url, keys)
        assert a.post(a.signed(case_id="C-1")).status_code == 201
        a.client.app.state.server.ledger.checkpoint()  # type: ignore[attr-defined]
        yield a


ROUTES: list[tuple[str, str, set[str]]] = [
    ("POST", "/v1/cases/C-1/events", {"agency"}),
    ("POST", "/v1/events:batch", {"agency"}),
    ("GET", "/v1/cases", {"panel", "auditor", "agency"}),
    ("GET", "/v1/cases/C-1/events", {"panel", "auditor", "agency"}),
    ("GET", "/v1/cases/C-1/replay", {"panel"}),
    ("GET", "/v1/cases/C-1/chronology?format=csv", {"panel"}),
    ("GET", "/v1/cases/C-1/stalls", {"panel"}),
    ("GET", "/v1/cases/C-1/bundle", {"panel", "auditor"}),
    ("GET", "/v1/log/checkpoint", {"panel", "auditor", "agency", "admin"}),
    ("GET", "/v1/log/proof/inclusion?index=0", {"auditor"}),
    ("GET", "/v1/log/proof/consistency?first=1&second=2", {"auditor"}),
    ("GET", "/v1/log/entries?start=0&end=2", {"auditor"}),
    ("GET", "/v1/agencies", {"admin"}),
    ("POST", "/v1/tokens", {"admin"}),
]


def call(api: Api, method: str, path: str, role: str | None) -> Any:
    if method == "GET":
        return api.client.get(path, headers=api.auth(role))
    if path.endswith(":batch"):
        payload: Any = {"events": [api.signed()]}
    elif path == "/v1/tokens":
        payload = {"name": f"t-{api.counter}-{role}", "role": "panel"}
        api.counter += 1
    else:
        payload = api.signed()
    return api.client.post(path, json=payload, headers=api.auth(role))


@pytest.mark.parametrize(("method", "path", "allowed"), ROUTES, ids=[r[1] for r in ROUTES])
def test_every_role_boundary_both_ways(api: Api, method: str, path: str, allowed: set[str]) -> None:
    for role in ("agency", "panel", "auditor", "admin"):
        r = call(api, method, path, role)
        if role in allowed:
            assert r.status_code in (200, 201), (role, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    r = call(api, method, path, None)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_idempotent_retry_and_conflict(api: Api) -> None:
    event = api.signed()
    first = api.post(event)
    assert first.status_code == 201
    again = api.post(event)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert {k: v for k, v in again.json().items() if k != "duplicate"} == {
        k: v for k, v in first.json().items() if k != "duplicate"
    }
    changed = api.signed(event_id=event["body"]["event_id"], occurred_at="2024-03-04T09:00:00Z")
    clash = api.post(changed)
    assert clash.status_code == 409 and clash.headers["content-type"] == "application/problem+json"


def test_agency_cannot_write_as_another_or_without_its_key(api: Api) -> None:
    # Its own token, another agency's body (even signed with that agency's key).
    assert api.post(api.signed(agency="csc-b")).status_code == 403
    # A stolen token without the key: a body signed by someone else's key.
    thief = Signer(Ed25519PrivateKey.generate())
    assert api.post(api.signed(signer=thief)).status_code == 403
    forged = api.signed()
    forged["sig"] = api.signed(signer=thief)["sig"]
    assert api.post(forged).status_code == 403


def test_revoked_key_and_revoked_token_are_refused(api: Api) -> None:
    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    old = api.signers["police-a"]
    _, path = ledger.add_agency_key("police-a")
    ledger.revoke_agency_key("police-a", old.key_id, "device lost")
    assert api.post(api.signed(signer=old)).status_code == 403
    api.signers["police-a"] = load_key_file(path)
    assert api.post(api.signed()).status_code == 201
    r = api.client.delete("/v1/tokens/agency:police-a", headers=api.auth("admin"))
    assert r.status_code == 204
    r = api.post(api.signed())
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_batch_is_atomic(api: Api) -> None:
    good = api.signed(case_id="B-1")
    bad = api.signed(case_id="B-2", type="CASE_CLOSED", payload={"reason": "RC0"})
    r = api.client.post(
        "/v1/events:batch", json={"events": [good, bad]}, headers=api.auth("agency")
    )
    assert r.status_code == 422 and "payload.reason" in r.json()["detail"]
    assert api.client.get("/v1/cases/B-1/events", headers=api.auth("panel")).status_code == 404
    r = api.client.post("/v1/events:batch", json={"events": [good]}, headers=api.auth("agency"))
    assert r.status_code == 201 and r.json()["receipts"][0]["seq"] == 1
    assert r.json()["receipts"][0]["leaf_index"] is None  # not integrated yet
    api.client.app.state.server.ledger.checkpoint()  # type: ignore[attr-defined]
    retried = api.client.post(
        "/v1/events:batch", json={"events": [good]}, headers=api.auth("agency")
    )
    assert retried.status_code == 200  # a retry: nothing new was recorded
    again = retried.json()["receipts"][0]
    assert (
        again["duplicate"] is True and again["event_hash"] == r.json()["receipts"][0]["event_hash"]
    )
    single = api.post(good).json()  # the single route says the same of the same event
    assert again["leaf_index"] == single["leaf_index"] is not None


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"content-type": "text/plain"}, b"{}", 415),
        ({"content-type": "application/json"}, b"{" * (1 << 20) + b"}", 413),
        ({"content-type": "application/json"}, b"not json", 422),
        ({"content-type": "application/json"}, b'{"body": {}, "sig": "x"}', 403),
        ({"content-type": "application/json"}, b'{"body": [], "sig": 1}', 422),
    ],
)
def test_bad_requests_are_problems_never_500(
    api: Api, headers: dict[str, str], content: bytes, status: int
) -> None:
    r = api.client.post(
        "/v1/cases/C-1/events", content=content, headers={**headers, **api.auth("agency")}
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]


@pytest.mark.parametrize(
    "as_of", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00%2B01:00", "1899-12-31"]
)
def test_an_as_of_beyond_the_calendar_is_a_400_problem(api: Api, as_of: str) -> None:
    api.post(api.signed(event_id="e-asof"))
    for route in ("replay?", "chronology?format=csv&"):
        r = api.client.get(f"/v1/cases/C-1/{route}as_of={as_of}", headers=api.auth("panel"))
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "outside the years" in r.json()["detail"]


def test_an_oversized_body_without_a_length_is_413_and_put_is_405(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"body": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    r = api.client.post(
        "/v1/cases/C-1/events",
        content=chunks(),
        headers={"content-type": "application/json", **api.auth("agency")},
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    r = api.client.put("/v1/cases/C-1/events", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("agency", ["no-such-agency", "ledger"])
def test_an_agency_token_is_only_for_a_registered_agency(api: Api, agency: str) -> None:
    r = api.client.post(
        "/v1/tokens",
        json={"name": f"t-{agency}", "role": "agency", "agency": agency},
        headers=api.auth("admin"),
    )
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    r = api.client.post(
        "/v1/tokens",
        json={"name": "t-ok", "role": "agency", "agency": "police-a"},
        headers=api.auth("admin"),
    )
    assert r.status_code in (200, 201), r.text


def test_every_panel_read_is_on_the_hash_chained_access_log(api: Api) -> None:
    for route in ("replay", "stalls", "chronology?format=html"):
        assert (
            api.client.get(f"/v1/cases/C-1/{route}", headers=api.auth("panel")).status_code == 200
        )
    assert api.client.get("/v1/cases/C-1/bundle", headers=api.auth("auditor")).status_code == 200
    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    log = ledger.access_log("C-1")
    assert [e.body["payload"]["reader"] for e in log] == ["panel-1"] * 3 + ["auditor-1"]
    assert all(b.prev_hash == a.event_hash for a, b in itertools.pairwise(log))
    report = audit(ledger.store, ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_an_auditor_reading_log_entries_is_on_each_cases_access_log(api: Api) -> None:
    api.post(api.signed(case_id="C-1"))
    api.post(api.signed(case_id="C-2"))
    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    ledger.checkpoint()
    size = ledger.log.size()
    before = {c: len(ledger.access_log(c)) for c in ("C-1", "C-2")}
    r = api.client.get(f"/v1/log/entries?start=0&end={size}", headers=api.auth("auditor"))
    assert r.status_code == 200 and len(r.json()["entries"]) == size
    for case in ("C-1", "C-2"):
        log = ledger.access_log(case)
        assert len(log) == before[case] + 1
        assert log[-1].body["payload"] == {
            "reader": "auditor-1",
            "summary": "auditor /v1/log/entries",
        }


def test_auditor_sees_metadata_not_content(api: Api) -> None:
    events = api.client.get("/v1/cases/C-1/events", headers=api.auth("auditor")).json()["events"]
    assert events and all("envelope" not in e and e["event_hash"] for e in events)
    own = api.client.get("/v1/cases/C-1/events", headers=api.auth("agency-b")).json()["events"]
    assert own == []  # csc-b wrote nothing in C-1


def test_rate_limit_is_429(db_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "k"
    ledger = Ledger.open(db_url, keys)
    ledger.init("rl.test/log")
    token = ledger.tokens.issue("panel-rl", "panel")
    ledger.close()
    app = create_app(
        Settings(
            db=db_url,
            keys=keys,
            integrate_every_s=0,
            sweep_every_s=0,
            rate_limit_per_s=0.001,
            rate_limit_burst=3,
        )
    )
    with TestClient(app) as client:
        codes = [
            client.get("/v1/cases", headers={"Authorization": f"Bearer {token}"}).status_code
            for _ in range(5)
        ]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_health_and_security_headers(api: Api) -> None:
    r = api.client.get("/v1/health")
    assert r.status_code == 200 and r.json()["database"] == "ok"
    assert r.headers["x-content-type-options"] == "nosniff"
    page = api.client.get("/v1/cases/C-1/chronology?format=html", headers=api.auth("panel"))
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in page.headers


def test_openapi_has_an_example_for_every_route(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    missing = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            text = json.dumps(op)
            refs = [
                schemas[name]
                for name in re.findall(r'"#/components/schemas/(\w+)"', text)
                if name in schemas and name not in ("ProblemDetails", "HTTPValidationError")
            ]
            if '"example' not in text and not any("examples" in json.dumps(s) for s in refs):
                missing.append(f"{method.upper()} {path}")
    assert missing == []


def test_witness_over_http_cosigns_and_the_log_serves_it(api: Api, tmp_path: Path) -> None:
    from ledger.checkpoint import NoteVerifier, verify_cosignature
    from ledger.witness import RemoteLog, Witness

    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    remote = RemoteLog("http://testserver", api.tokens["auditor"], transport=api.client._transport)
    witness = Witness(tmp_path / "w", "witness.test/w1")
    key = witness.pinned_log_key(NoteVerifier.parse(ledger.log_verifier().encode()))
    first = witness.witness(remote, remote.latest_checkpoint(), key)
    api.post(api.signed())
    ledger.checkpoint()
    second = witness.witness(remote, remote.latest_checkpoint(), key)
    assert second.previous_size == first.size < second.size
    served = api.client.get("/v1/log/checkpoint", headers=api.auth("panel")).text
    assert verify_cosignature(served, witness.verifier) > 0
    # A forged cosignature line is refused, not stored.
    r = api.client.post(
        "/v1/log/cosignatures",
        headers=api.auth("auditor"),
        json={
            "tree_size": second.size,
            "verifier_key": witness.verifier.encode(),
            "line": first.cosignature,
        },
    )
    assert r.status_code == 400 and "cosignature refused" in r.json()["detail"]
    remote.close()


def test_subjects_are_shown_by_role_and_never_by_name(api: Api) -> None:
    from ledger.vault import Vault

    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    ref = Vault(ledger).add(
        "Ada Pemberton-Lowe", "2009-06-01", "3 Elm Row, SE11", borough="Lambeth"
    )
    path = f"/v1/subjects/{ref}?reason=serious%20case%20review"
    panel = api.client.get(path, headers=api.auth("panel"))
    assert panel.status_code == 200, panel.text
    assert set(panel.json()) == {"ref", "kind", "age_band", "borough"}
    assert panel.json()["borough"] == "Lambeth" and "Ada" not in panel.text
    auditor = api.client.get(path, headers=api.auth("auditor"))
    assert auditor.status_code == 200 and set(auditor.json()) == {
        "ref",
        "kind",
        "added_at",
        "erased_at",
    }
    for role in ("agency", "admin"):  # the agency did not supply this subject
        denied = api.client.get(path, headers=api.auth(role))
        assert denied.status_code == 403
        assert denied.headers["content-type"] == "application/problem+json"
    assert api.client.get(path).status_code == 401
    reads = ledger.access_log(f"subject:{ref}")
    assert [e.body["payload"]["reader"] for e in reads] == ["panel-1"]
    missing = api.client.get(f"/v1/subjects/{ref}", headers=api.auth("panel"))
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "application/problem+json"
    unknown = api.client.get("/v1/subjects/child_nobody?reason=review", headers=api.auth("panel"))
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


def test_an_agency_reads_back_only_the_identities_it_supplied(api: Api) -> None:
    person = {"name": "Kit Marlowe-Adeyemi", "dob": "2010-04-01", "borough": "Croydon"}
    added = api.client.post("/v1/subjects", json=person, headers=api.auth("agency"))
    assert added.status_code == 201, added.text
    ref = added.json()["ref"]
    path = f"/v1/subjects/{ref}?reason=strategy%20discussion"
    own = api.client.get(path, headers=api.auth("agency"))
    assert own.status_code == 200 and own.json()["name"] == person["name"]
    assert own.json()["dob"] == "2010-04-01"
    other = api.client.get(path, headers=api.auth("agency-b"))
    assert other.status_code == 403 and person["name"] not in other.text
    # The same person supplied by a second agency: same reference, and now it may read too.
    again = api.client.post("/v1/subjects", json=person, headers=api.auth("agency-b"))
    assert again.status_code == 201 and again.json()["ref"] == ref
    assert api.client.get(path, headers=api.auth("agency-b")).json()["name"] == person["name"]
    panel = api.client.get(path, headers=api.auth("panel")).json()
    assert person["name"] not in str(panel) and panel["borough"] == "Croydon"
    for role in ("panel", "auditor", "admin"):
        assert (
            api.client.post("/v1/subjects", json=person, headers=api.auth(role)).status_code == 403
        )
    for bad in ({"name": ""}, {"name": "A", "dob": "01/04/2010"}, {"name": "A", "ssn": "1"}):
        r = api.client.post("/v1/subjects", json=bad, headers=api.auth("agency"))
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    blank = api.client.post("/v1/subjects", json={"name": "   "}, headers=api.auth("agency"))
    assert blank.status_code == 400
    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    readers = [e.body["payload"]["reader"] for e in ledger.access_log(f"subject:{ref}")]
    assert readers == ["agency:police-a", "agency:csc-b", "panel-1"]


def test_case_listing_shows_an_agency_only_its_cases_and_honours_limit(api: Api) -> None:
    assert api.post(api.signed(agency="csc-b", case_id="C-2"), "agency-b").status_code == 201
    assert api.post(api.signed(case_id="C-3")).status_code == 201

    def ids(role: str, query: str = "") -> list[str]:
        r = api.client.get(f"/v1/cases{query}", headers=api.auth(role))
        assert r.status_code == 200, r.text
        return [c["case_id"] for c in r.json()]

    assert ids("panel") == ["C-1", "C-2", "C-3"]
    assert ids("agency") == ["C-1", "C-3"]
    assert ids("agency-b") == ["C-2"]
    assert ids("agency-b", "?agency=police-a") == []
    assert ids("panel", "?limit=2") == ["C-1", "C-2"]
    assert ids("agency", "?limit=1") == ["C-1"]


def test_reading_a_case_that_does_not_exist_records_nothing(api: Api) -> None:
    from api.pages import SESSION

    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    for path in ("/v1/cases/NOPE/replay", "/v1/cases/NOPE/bundle", "/v1/cases/NOPE/stalls"):
        r = api.client.get(path, headers=api.auth("panel"))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    api.client.cookies.set(SESSION, api.tokens["panel"])
    try:
        bundle = api.client.get("/cases/NOPE/bundle.json")
        assert bundle.status_code == 404
        assert bundle.headers["content-type"] == "application/problem+json"
        assert api.client.get("/cases/NOPE/chronology.csv").status_code == 404
        assert api.client.get("/cases/NOPE").status_code == 404
        assert api.client.get("/cases/C-1/chronology.csv").status_code == 200
    finally:
        api.client.cookies.clear()
    assert ledger.access_log("NOPE") == []
    assert [e.body["payload"]["summary"] for e in ledger.access_log("C-1")] == [
        "panel page.chronology.csv"
    ]


def _with_narrative(api: Api, rationale: str, agency: str = "police-a") -> dict[str, Any]:
    """A request as the client sends it: version 2 body, commitment signed, text beside."""
    from ledger.client import LedgerClient

    api.counter += 1
    client = LedgerClient("http://unused", "unused", api.signers[agency])
    try:
        return client.signed(
            {
                "v": 2,
                "case_id": "C-1",
                "event_id": f"api-{api.counter:05d}",
                "type": "CHILD_SEEN",
                "occurred_at": "2024-03-03T14:05:00Z",
                "agency": agency,
                "actor": {"role": "officer"},
                "payload": {"child_ref": CHILD, "rationale": rationale},
                "responds_to": [],
                "corrects": None,
            }
        )
    finally:
        client.close()


def test_narrative_over_http_is_sealed_and_shown_by_role(api: Api) -> None:
    secret = "Seen at 17 Larkspur Mews, SE11 4QQ; she is streetwise."
    event = _with_narrative(api, secret)
    assert "rationale" not in event["body"]["payload"] and "narrative" in event["body"]
    first = api.post(event)
    assert first.status_code == 201, first.text
    again = api.post(event)  # a retry of the same request: the original receipt
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other = api.post(_with_narrative(api, "Croydon's own note", "csc-b"), role="agency-b")
    assert other.status_code == 201, other.text

    own = api.client.get("/v1/cases/C-1/events", headers=api.auth("agency")).json()["events"]
    assert [e["narrative"] for e in own if "narrative" in e] == [{"rationale": secret}]
    theirs = api.client.get("/v1/cases/C-1/events", headers=api.auth("agency-b")).json()
    assert [e["narrative"] for e in theirs["events"] if "narrative" in e] == [
        {"rationale": "Croydon's own note"}
    ]
    audited = api.client.get("/v1/cases/C-1/events", headers=api.auth("auditor")).text
    assert "Larkspur" not in audited and "narrative" not in audited

    replay = api.client.get("/v1/cases/C-1/replay", headers=api.auth("panel")).json()
    actions = {row["event_id"]: row["action"] for row in replay["chronology"]}
    shown = actions[event["body"]["event_id"]]
    assert "Larkspur" not in shown and "SE11" not in shown and "streetwise" in shown
    assert any(f["kind"] == "language" for f in replay["flags"])
    csv = api.client.get("/v1/cases/C-1/chronology?format=csv", headers=api.auth("panel")).text
    assert "Larkspur" not in csv and "streetwise" in csv


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ("drop-text", "its text was not sent"),
        ("alter-text", "does not match its commitment"),
        ("bad-salt", "32 bytes"),
        ("unknown-field", "not a narrative field"),
    ],
)
def test_narrative_that_does_not_match_is_a_422_problem(api: Api, change: str, detail: str) -> None:
    event = _with_narrative(api, "Seen at home.")
    if change == "drop-text":
        del event["narrative"]
    elif change == "alter-text":
        event["narrative"]["rationale"]["text"] = "Seen at school."
    elif change == "bad-salt":
        event["narrative"]["rationale"]["salt"] = "c2hvcnQ="
    else:
        event["narrative"]["notes"] = event["narrative"]["rationale"]
    response = api.post(event)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert detail in response.json()["detail"]
    events = api.client.get("/v1/cases/C-1/events", headers=api.auth("agency")).json()["events"]
    assert event["body"]["event_id"] not in {e["event_id"] for e in events}


def test_the_printable_chronology_page_says_what_the_api_says(api: Api) -> None:
    import html

    from api.pages import SESSION

    disclosure = api.signed(
        case_id="S-1",
        type="DISCLOSURE_RECEIVED",
        payload={"child_ref": CHILD, "sexual_offence": True, "offence": "rape", "child_age": 15},
    )
    assert api.post(disclosure).status_code == 201
    later = api.signed(case_id="S-1", occurred_at="2024-09-03T10:00:00Z")
    assert api.post(later).status_code == 201  # the case's last word so far
    stalls = api.client.get("/v1/cases/S-1/stalls", headers=api.auth("panel")).json()
    sentence = stalls["first_stall"]["sentence"]
    api.client.cookies.set(SESSION, api.tokens["panel"])
    try:
        page = api.client.get("/cases/S-1/chronology.html").text
    finally:
        api.client.cookies.clear()
    assert html.escape(sentence) in page  # the same outstanding days, not counted to "now"


def _fast_path(monkeypatch: pytest.MonkeyPatch, on: bool = True) -> list[bool]:
    """Record what the single-append fast path decided; with `on` False, it hands
    every request to the route."""
    from api.fastpath import SingleAppend

    real = SingleAppend._append
    answered: list[bool] = []

    async def spy(scope: Any, case_id: str, body: bytes, send: Any) -> bool:
        done = await real(scope, case_id, body, send) if on else False
        answered.append(done)
        return done

    monkeypatch.setattr(SingleAppend, "_append", staticmethod(spy))
    return answered


def test_the_fast_path_answers_a_new_append_as_the_route_does(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = _fast_path(monkeypatch)
    fast = api.post(api.signed())
    assert answered == [True]
    monkeypatch.undo()
    _fast_path(monkeypatch, on=False)
    routed = api.post(api.signed())
    for r in (fast, routed):
        assert r.status_code == 201
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert fast.json().keys() == routed.json().keys()
    assert (fast.json()["seq"], routed.json()["seq"]) == (2, 3)
    assert fast.json()["duplicate"] is False and fast.json()["leaf_index"] is None


def test_the_fast_path_looks_up_a_token_its_cache_no_longer_holds(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept token answers expire every two seconds: the fast path then looks the token
    up itself rather than handing the request over; a token revoked meanwhile (in
    another process, so this one's cache is not cleared) is refused by the route."""
    tokens = api.client.app.state.server.tokens  # type: ignore[attr-defined]
    answered = _fast_path(monkeypatch)
    assert api.post(api.signed()).status_code == 201
    tokens._seen.clear()  # as two seconds on
    assert api.post(api.signed()).status_code == 201
    assert answered == [True, True]
    other = Ledger.open(api.url, api.keys)
    try:
        other.tokens.revoke("agency:police-a")
    finally:
        other.close()
    tokens._seen.clear()
    refused = api.post(api.signed())
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert answered == [True, True, False]


def test_the_fast_path_leaves_repeats_and_refusals_to_the_route(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = _fast_path(monkeypatch)
    event = api.signed()
    first = api.post(event)
    again = api.post(event)  # a retry: the original receipt, with its leaf once integrated
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["event_hash"] == first.json()["event_hash"]
    forged = api.signed()
    forged["sig"] = api.signed(signer=Signer(Ed25519PrivateKey.generate()))["sig"]
    assert api.post(forged).status_code == 403
    assert api.post(api.signed(), role="panel").status_code == 403
    assert api.post(api.signed(agency="csc-b")).status_code == 403  # not its own agency
    assert answered == [True, False, False, False, False]


def _one_agency(db_url: str, keys: Path) -> tuple[str, Signer]:
    """A ledger with one agency, police-a: its API token and its signer."""
    ledger = Ledger.open(db_url, keys)
    ledger.init("one.test/log")
    _, path = ledger.register_agency("police-a", "police", borough="Lambeth")
    assert path is not None
    token = ledger.tokens.issue("agency:police-a", "agency", "police-a")
    ledger.close()
    return token, load_key_file(path)


def test_a_request_the_fast_path_hands_on_counts_once_against_the_rate_limit(
    db_url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "k"
    token, signer = _one_agency(db_url, keys)
    settings = quiet(db_url, keys, rate_limit_per_s=0.001, rate_limit_burst=3)
    with TestClient(create_app(settings)) as client:
        api = Api(client, {"agency": token}, {"police-a": signer}, db_url, keys)
        codes = [api.post(api.signed()).status_code]  # the route looks the token up
        forged = api.signed()
        forged["sig"] = api.signed(signer=Signer(Ed25519PrivateKey.generate()))["sig"]
        # Refused after the fast path counted it: the route answers, counting nothing more.
        codes += [api.post(forged).status_code, *(api.post(api.signed()).status_code for _ in "ab")]
    assert codes == [201, 403, 201, 429]


def test_the_fast_path_answers_cross_origin_clients_as_the_route_does(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "k"
    token, signer = _one_agency(db_url, keys)
    origin = "https://cms.example"
    settings = quiet(db_url, keys, cors_origins=[origin])
    with TestClient(create_app(settings), headers={"Origin": origin}) as client:
        api = Api(client, {"agency": token}, {"police-a": signer}, db_url, keys)
        assert api.post(api.signed()).status_code == 201  # the route looks the token up
        answered = _fast_path(monkeypatch)
        r = api.post(api.signed())
    assert answered == [True] and r.status_code == 201
    assert r.headers["access-control-allow-origin"] == origin


def test_what_the_fast_path_submitted_is_not_submitted_again(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeat, a refusal or a conflict is answered by the route from the committer's
    verdict on the fast path's submission: each request reaches the committer once."""
    answered = _fast_path(monkeypatch)
    committer = api.client.app.state.server.committer  # type: ignore[attr-defined]
    submitted: list[str] = []

    def counting(real: Any) -> Any:
        def submit(submission: Any) -> Any:
            submitted.append(submission.body["event_id"])
            return real(submission)

        return submit

    # Submitted either way (awaited on the loop, or through a future), it counts.
    for name in ("submit", "submit_awaitable"):
        monkeypatch.setattr(committer, name, counting(getattr(committer, name)))
    event = api.signed()
    forged = api.signed()
    forged["sig"] = api.signed(signer=Signer(Ed25519PrivateKey.generate()))["sig"]
    clash = api.signed()
    clash["body"] = {**event["body"], "occurred_at": "2024-03-04T10:00:00Z"}
    clash["sig"] = base64.b64encode(
        api.signers["police-a"].sign_body(canonical(clash["body"]))
    ).decode()
    codes = [api.post(e).status_code for e in (event, event, forged, clash)]
    assert codes == [201, 200, 403, 409]
    ids = [e["body"]["event_id"] for e in (event, event, forged, clash)]
    assert submitted == ids  # clash reuses the event's id with another body
    assert answered == [True, False, False, False]


@pytest.mark.parametrize(
    "types", [("text/plain", "application/json"), ("application/json", "text/plain")]
)
def test_two_content_types_are_refused_before_any_parsing(
    api: Api, types: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = _fast_path(monkeypatch)
    event = api.signed()
    headers = [("authorization", f"Bearer {api.tokens['agency']}")]
    headers += [("content-type", t) for t in types]
    r = api.client.post("/v1/cases/C-1/events", content=json.dumps(event).encode(), headers=headers)
    assert r.status_code == 415 and answered == []
    events = api.client.get("/v1/cases/C-1/events", headers=api.auth("agency")).json()["events"]
    assert event["body"]["event_id"] not in {e["event_id"] for e in events}


def test_under_a_root_path_appends_are_left_to_the_router(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "k"
    token, signer = _one_agency(db_url, keys)
    with TestClient(create_app(quiet(db_url, keys)), root_path="/ledger") as client:
        api = Api(client, {"agency": token}, {"police-a": signer}, db_url, keys)
        answered = _fast_path(monkeypatch)
        api.post(api.signed())
    assert answered == []


def test_a_damaged_stored_event_is_a_problem_saying_so_not_a_bare_500(api: Api) -> None:
    """A row altered behind the ledger's back until no envelope can be read from it:
    the reads that meet it answer with a problem that names it and says to verify."""
    from tests.rawdb import raw_db_for

    ledger = api.client.app.state.server.ledger  # type: ignore[attr-defined]
    assert api.post(api.signed(case_id="C-1")).status_code == 201
    raw = raw_db_for(api.url, ledger.store.catalog.events_table)
    try:
        raw.set_state("case/C-1", 2, b'{"body": "not an envelope"}')
    finally:
        raw.close()
    ledger._parsed.clear()  # as a process that had not read the case yet
    for path in ("/v1/cases/C-1/events", "/v1/cases/C-1/replay"):
        r = api.client.get(path, headers=api.auth("panel"))
        assert r.status_code == 500, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        detail = r.json()["detail"]
        assert "stored event 2 of case/C-1 cannot be read" in detail, detail
        assert "ledger verify" in detail and r.json()["type"].endswith("integrity")
