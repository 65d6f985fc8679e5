"""Verify against how a ledger is stored: the in-database index check of SQLite
ledgers (files reloaded, moved, rebuilt), and stored text it must report rather
than fail on. Every test edits the real database, as a DBA could."""

from __future__ import annotations

import gc
import glob
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import cast

import pytest

from ledger.audit import Auditor, AuditReport, audit
from ledger.canonical import envelope_bytes
from ledger.core import Ledger
from ledger.keys import load_key_file
from ledger.verify import parse_envelope
from tests.conftest import World
from tests.rawdb import RawDB
from tests.test_tamper import CASE, REBUILT, RETYPED, three_events


def build(url: str, keys: Path) -> Ledger:
    """A small ledger: one agency, three events of one case (ev-00001..3)."""
    ledger = Ledger.open(url, keys)
    ledger.init("test.example/log")
    _, path = ledger.register_agency("police-a", "police", borough="Lambeth")
    assert path is not None
    writer = World(ledger, url, keys, {"police-a": load_key_file(path)}, cast(RawDB, None))
    for _ in range(3):
        writer.append("police-a")
    return ledger


def verify(ledger: Ledger) -> AuditReport:
    return audit(ledger.store, ledger.ledger_signer().public_bytes)


def leftovers() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "ledger-verify-*")))


def test_verify_reads_the_file_the_store_has_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened by a relative path, then the program moved: the join must still run
    against the ledger's own file, not one of the same name where it now is."""
    (tmp_path / "live").mkdir()
    (tmp_path / "backup").mkdir()
    monkeypatch.chdir(tmp_path / "live")
    ledger = build("sqlite:///ledger.sqlite", tmp_path / "keys")
    try:
        with sqlite3.connect("ledger.sqlite") as live:
            live.backup(sqlite3.connect(tmp_path / "backup" / "ledger.sqlite"))
            live.execute("UPDATE ledger_event_index SET type = 'CASE_CLOSED' WHERE event_id = ?",
                         ["ev-00001"])  # fmt: skip
        live.close()
        monkeypatch.chdir(tmp_path / "backup")
        report = verify(ledger)
        assert [p.event_id for p in report.problems] == ["ev-00001"]
        assert "disagree on type: index 'CASE_CLOSED'" in report.problems[0].message
    finally:
        ledger.close()


def test_a_ledger_reloaded_as_utf16_verifies_and_leaves_no_files(tmp_path: Path) -> None:
    """SQLite attaches only a database of its own text encoding: the temporary file
    takes the ledger's."""
    build(f"sqlite:///{tmp_path}/ledger.sqlite", tmp_path / "keys").close()
    with sqlite3.connect(tmp_path / "ledger.sqlite") as old:
        dump = "\n".join(old.iterdump())
    old.close()
    new = sqlite3.connect(tmp_path / "utf16.sqlite")
    new.execute("PRAGMA encoding = 'UTF-16le'")
    new.executescript(dump)
    new.close()
    before = leftovers()
    ledger = Ledger.open(f"sqlite:///{tmp_path}/utf16.sqlite", tmp_path / "keys", create=False)
    try:
        auditor = Auditor(ledger.store, ledger.ledger_signer().public_bytes)
        assert auditor.index_in_database
        report = auditor.run()
        assert report.ok, [p.describe() for p in report.problems]
        assert report.events == 6  # genesis, agency registered and key added, three
    finally:
        ledger.close()
    assert leftovers() <= before


def test_a_path_starting_with_two_slashes_is_not_read_as_a_host(tmp_path: Path) -> None:
    ledger = build(f"sqlite:///{'/' + str(tmp_path)}/ledger.sqlite", tmp_path / "keys")
    try:
        assert ledger.store.url.path.startswith("//")
        auditor = Auditor(ledger.store, ledger.ledger_signer().public_bytes)
        assert auditor.index_in_database
        assert auditor.run().ok
    finally:
        ledger.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_ledger_is_not_held_open_once_the_index_is_compared(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read snapshot of the ledger outlives the index check: the Merkle pass
    after it can take a while, and the ledger's write-ahead log could not be reset."""
    three_events(world)
    seen: dict[str, bool] = {}
    real = Auditor._verify_log

    def during_log_check(self: Auditor, origin: str) -> None:
        seen["held"] = self.ids.db.in_transaction
        real(self, origin)

    monkeypatch.setattr(Auditor, "_verify_log", during_log_check)
    assert Auditor(world.ledger.store, world.ledger.ledger_signer().public_bytes).run().ok
    assert seen == {"held": False}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_index_without_its_key_is_joined_once_not_page_by_page(world: World) -> None:
    """Page by page, SQLite would index a keyless table again for every page."""
    three_events(world)
    key = world.ledger.ledger_signer().public_bytes
    keyed = Auditor(world.ledger.store, key)
    assert keyed.ids.join_each_flush
    assert keyed.run().ok
    for statement in REBUILT:
        world.raw.on_index(statement)
    keyless = Auditor(world.ledger.store, key)
    assert keyless.index_in_database and not keyless.ids.join_each_flush
    assert keyless.run().ok


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_index_row_whose_id_is_not_text_is_named(world: World) -> None:
    """A NULL id read as the string 'None' would match an event of that id, while
    lookups by the id (idempotency, references) no longer find it."""
    three_events(world)
    world.ledger.append(world.signed(world.body("police-a", event_id="None")))
    world.raw.on_index("UPDATE {t} SET event_id = NULL WHERE event_id = 'None'")
    for inside in (True, False):
        report = Auditor(
            world.ledger.store, world.ledger.ledger_signer().public_bytes, index_in_database=inside
        ).run()
        messages = [p.message for p in report.problems]
        assert any("holds event id None as NoneType, not text" in m for m in messages)
        assert any("event None is missing from the event index" in m for m in messages)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_invalid_utf8_in_an_index_column_is_reported(world: World) -> None:
    receipts = three_events(world)
    target = receipts[1].event_id
    world.raw.on_index("UPDATE {t} SET stream = CAST(x'ff' AS TEXT) WHERE event_id = ?", [target])
    for inside in (True, False):  # compared in SQLite, or read into Python
        report = Auditor(
            world.ledger.store, world.ledger.ledger_signer().public_bytes, index_in_database=inside
        ).run()
        assert [p.event_id for p in report.problems] == [target]
        assert "disagree on stream" in report.problems[0].message


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_index_read_into_python_ignores_a_rebuilt_collation(world: World) -> None:
    """Read into Python, the index must come in bytewise id order whatever collation
    a DBA rebuilt the table with, or the merge would pair the wrong rows."""
    three_events(world)
    for event_id in ("a", "B", "c"):
        world.ledger.append(world.signed(world.body("police-a", event_id=event_id)))
    for statement in RETYPED:  # event_id now COLLATE NOCASE: a, B, c rather than B, a, c
        world.raw.on_index(statement)
    report = Auditor(
        world.ledger.store, world.ledger.ledger_signer().public_bytes, index_in_database=False
    ).run()
    assert report.ok, [p.message for p in report.problems]
    assert report.events >= 6


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("field", ["event_id", "type", "agency", "key_id", "case_id"])
def test_a_lone_surrogate_in_a_stored_body_is_reported(world: World, field: str) -> None:
    """JSON can spell a string no UTF-8 can hold; it must not end verify."""
    three_events(world)
    old = parse_envelope(world.raw.state(CASE, 2))
    value = str(old.body[field]).encode()
    body_bytes = old.body_bytes.replace(b'"' + value + b'"', b'"\\ud800"', 1)
    assert body_bytes != old.body_bytes
    world.raw.set_state(
        CASE, 2, envelope_bytes(body_bytes, old.sig, old.seq, old.recorded_at, old.prev_hash)
    )
    report = verify(world.ledger)
    assert (report.problems[0].stream, report.problems[0].seq) == (CASE, 2)
    assert "not valid Unicode" in report.problems[0].message


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_auditor_dropped_unrun_leaves_no_temporary_file(world: World) -> None:
    before = leftovers()
    auditor = Auditor(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert leftovers() - before  # its file of events seen
    del auditor
    gc.collect()
    assert leftovers() <= before
