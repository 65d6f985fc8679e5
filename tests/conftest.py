"""Fixtures: every store test runs against SQLite and PostgreSQL alike.

PostgreSQL tests never skip: if the server named by LEDGER_TEST_PG is down they
fail, because a silently skipped store test would hide a broken store. Each
PostgreSQL test gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.audit import audit
from ledger.canonical import canonical
from ledger.core import Ledger, Submission
from ledger.keys import Signer, load_key_file
from ledger.refs import pseudonym
from tests.rawdb import RawDB, raw_db_for

PG_URL = os.environ.get("LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
CHILD = pseudonym("child", "test child", b"test-key")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.sqlite"
        return
    schema = f"t_{secrets.token_hex(6)}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


@dataclass
class World:
    """An initialised ledger with two agencies, and helpers to write as them."""

    ledger: Ledger
    url: str
    keys: Path
    signers: dict[str, Signer]
    raw: RawDB
    counter: int = 0

    def body(
        self, agency: str, case_id: str = "C-1", event_type: str = "CHILD_SEEN", **fields: Any
    ) -> dict[str, Any]:
        self.counter += 1
        body: dict[str, Any] = {
            "v": 1,
            "case_id": case_id,
            "event_id": f"ev-{self.counter:05d}",
            "type": event_type,
            "occurred_at": "2024-03-03T14:05:00Z",
            "agency": agency,
            "actor": {"role": "practitioner"},
            "payload": {"child_ref": CHILD},
            "responds_to": [],
            "corrects": None,
            "key_id": self.signers[agency].key_id,
        }
        body.update(fields)
        return body

    def signed(self, body: dict[str, Any], signer: Signer | None = None) -> Submission:
        signer = signer or self.signers[body["agency"]]
        return Submission(body, signer.sign_body(canonical(body)))

    def append(self, agency: str, case_id: str = "C-1", **fields: Any) -> Any:
        return self.ledger.append(self.signed(self.body(agency, case_id, **fields)))

    def follows_another_writer(self) -> None:
        """Another writer (a second ledger on this store) appends to C-1, at seq 1 so
        far, then this one: this one's event must chain after the other's, whatever
        this process last saw of the case, and the ledger must verify."""
        other = Ledger.open(self.url, self.keys, create=False)
        try:
            theirs = other.append(self.signed(self.body("police-a")))
        finally:
            other.close()
        ours = self.append("police-a")
        assert (theirs.seq, ours.seq) == (2, 3)
        envelopes = self.ledger.case_envelopes("C-1", cached=False)
        assert [e.seq for e in envelopes] == [1, 2, 3]
        assert envelopes[2].prev_hash == theirs.event_hash
        assert audit(self.ledger.store, self.ledger.ledger_signer().public_bytes).ok


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    keys = tmp_path / "keys"
    ledger = Ledger.open(db_url, keys)
    ledger.init("test.example/log")
    signers = {}
    for agency, kind, borough in (("police-a", "police", "Lambeth"), ("csc-b", "csc", "Croydon")):
        _, path = ledger.register_agency(agency, kind, borough=borough)
        assert path is not None
        signers[agency] = load_key_file(path)
    raw = raw_db_for(db_url, ledger.store.catalog.events_table)
    try:
        yield World(ledger, db_url, keys, signers, raw)
    finally:
        raw.close()
        ledger.close()


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bodies_checked(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The body of every signature check the append path makes from now on (those
    handed to worker threads and those checked in place), in the order made."""
    from ledger import sigchecks
    from ledger.verify import verify_chunk

    checked: list[bytes] = []

    def counting(chunk: list[tuple[Any, bytes, bytes]]) -> list[bool]:
        checked.extend(body for _, _, body in chunk)
        return verify_chunk(chunk)

    monkeypatch.setattr(sigchecks, "verify_chunk", counting)
    return checked
