"""Attacks on the database itself: each must make `ledger verify` name the event.

Every test edits the real SQLite file or PostgreSQL rows directly, then runs
the same verification `ledger verify` runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.audit import Auditor, AuditReport, audit
from ledger.canonical import canonical, envelope_bytes
from ledger.errors import IntegrityError
from ledger.keys import Signer
from ledger.verify import parse_envelope, stream_id
from tests.conftest import World
from tests.rawdb import SQLiteRaw

CASE = "case/C-1"


def verify(world: World) -> AuditReport:
    return audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)


def three_events(world: World) -> list[Any]:
    first = world.append(
        "police-a",
        event_type="DISCLOSURE_RECEIVED",
        payload={
            "child_ref": world.body("police-a")["payload"]["child_ref"],
            "sexual_offence": True,
        },
    )
    return [first, world.append("police-a"), world.append("csc-b")]


def first_problem(world: World) -> tuple[str, int, str | None, str]:
    report = verify(world)
    assert not report.ok, "tampering went unnoticed"
    p = report.problems[0]
    return p.stream, p.seq, p.event_id, p.message


def resign(world: World, version: int, body: dict[str, Any], signer: Signer) -> bytes:
    """Rebuild a stored event around a new body, keeping its ledger fields."""
    old = parse_envelope(world.raw.state(CASE, version))
    body_bytes = canonical(body)
    return envelope_bytes(
        body_bytes, signer.sign_body(body_bytes), old.seq, old.recorded_at, old.prev_hash
    )


def test_untouched_ledger_verifies(world: World) -> None:
    three_events(world)
    report = verify(world)
    assert report.ok, report.problems
    assert report.cases == 1
    assert report.events == 3 + 1 + 4  # case, genesis, two agencies x (registered, key)


def test_edited_payload_byte_is_named(world: World) -> None:
    receipts = three_events(world)
    state = world.raw.state(CASE, 2)
    marker = b"child_"
    at = state.index(marker) + len(marker)
    flipped = b"b" if state[at : at + 1] != b"b" else b"c"
    world.raw.set_state(CASE, 2, state[:at] + flipped + state[at + 1 :])
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 2, receipts[1].event_id)
    assert "signature does not verify" in message


def test_backdated_occurred_at_is_named(world: World) -> None:
    receipts = three_events(world)
    state = world.raw.state(CASE, 1)
    assert b"2024-03-03T14:05:00Z" in state
    world.raw.set_state(CASE, 1, state.replace(b"2024-03-03T14:05:00Z", b"2024-02-03T14:05:00Z"))
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 1, receipts[0].event_id)
    assert "signature" in message


def test_deleted_middle_event_is_named(world: World) -> None:
    receipts = three_events(world)
    world.raw.delete(CASE, 2)
    stream, _seq, event_id, message = first_problem(world)
    assert stream == CASE
    assert "seq 2 missing" in message
    assert event_id == receipts[2].event_id  # the event found where seq 2 should be


def test_swapped_events_are_named(world: World) -> None:
    receipts = three_events(world)
    two, three = world.raw.state(CASE, 2), world.raw.state(CASE, 3)
    world.raw.set_state(CASE, 2, three)
    world.raw.set_state(CASE, 3, two)
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 2, receipts[2].event_id)
    assert "reordered" in message


def test_inserted_forged_event_is_named(world: World) -> None:
    receipts = three_events(world)
    forger = Signer(Ed25519PrivateKey.generate())
    body = world.body(
        "police-a",
        event_type="CRIME_CANCELLED",
        payload={"ground": "recorded_in_error"},
        key_id=forger.key_id,
    )
    body_bytes = canonical(body)
    last = parse_envelope(world.raw.state(CASE, 3))
    forged = envelope_bytes(
        body_bytes, forger.sign_body(body_bytes), 4, last.recorded_at, receipts[2].event_hash
    )
    world.raw.insert(CASE, 4, world.raw.topic(CASE, 3), forged)
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 4, body["event_id"])
    assert "not a registered key" in message


def test_event_resigned_with_another_agencys_key_is_named(world: World) -> None:
    receipts = three_events(world)
    body = json.loads(parse_envelope(world.raw.state(CASE, 2)).body_bytes)
    body["key_id"] = world.signers["csc-b"].key_id  # still claims to be police-a
    world.raw.set_state(CASE, 2, resign(world, 2, body, world.signers["csc-b"]))
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 2, receipts[1].event_id)
    assert "belongs to agency 'csc-b'" in message


def forge_with_revoked_key(world: World, backdated: bool) -> str:
    """Revoke police-a's key, then write straight into the database, as whoever stole
    it would: an event signed with it, recorded now or (holding the database too)
    back-dated to the case's last event, before the revocation. Its event id."""
    from datetime import UTC, datetime

    from ledger.canonical import format_recorded_at

    receipts = three_events(world)
    old = world.signers["police-a"]
    world.ledger.add_agency_key("police-a")
    world.ledger.revoke_agency_key("police-a", old.key_id, "laptop stolen")
    body = world.body(
        "police-a", event_type="CRIME_CANCELLED", payload={"ground": "recorded_in_error"}
    )
    body_bytes = canonical(body)
    last = parse_envelope(world.raw.state(CASE, 3))
    recorded_at = last.recorded_at if backdated else format_recorded_at(datetime.now(UTC))
    forged = envelope_bytes(
        body_bytes, old.sign_body(body_bytes), 4, recorded_at, receipts[2].event_hash
    )
    world.raw.insert(CASE, 4, world.raw.topic(CASE, 3), forged)
    return str(body["event_id"])


def test_event_signed_with_revoked_key_is_named(world: World) -> None:
    forged = forge_with_revoked_key(world, backdated=False)
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 4, forged)
    assert "revoked at" in message


def test_revoked_key_with_a_backdated_recorded_at_is_named(world: World) -> None:
    forged = forge_with_revoked_key(world, backdated=True)
    stream, seq, event_id, message = first_problem(world)
    assert (stream, seq, event_id) == (CASE, 4, forged)
    assert "after the key's revocation" in message and "back-dated" in message


@pytest.mark.parametrize(
    "state",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than any parser's stack
        b'{"body": "\\ud800"}',  # a lone surrogate
        b"\xff\xfe not JSON",
        None,  # NULL
        "text, not bytes",
    ],
)
def test_a_corrupt_stored_row_is_reported_not_a_crash(world: World, state: Any) -> None:
    three_events(world)
    if state is None and not world.url.startswith("sqlite"):
        state = b""  # the PostgreSQL column refuses NULL: an empty value instead
    if isinstance(state, str) and not world.url.startswith("sqlite"):
        state = state.encode()  # bytea holds bytes only
    world.raw.set_state(CASE, 2, state)
    report = verify(world)
    assert not report.ok
    stream, seq, _event_id, message = first_problem(world)
    assert (stream, seq) == (CASE, 2)
    assert "not a valid event" in message


# Values PostgreSQL's typed columns refuse, which SQLite stores as they come.
ORIGINATOR_EDITS = {  # the value; as the notification log reads it; as a finding names it
    "blob": (b"\x00blob", "blob 00626c6f62", "blob 00626c6f62"),
    "not-hex": ("garbage", "garbage", "text 'garbage'"),
    "null": (None, "null", "null"),
    "not-utf-8": (b"\xff\xfe", "\udcff\udcfe", "text fffe"),  # stored as text, below
    "dashed": (str(stream_id(CASE)), str(stream_id(CASE)), f"text '{stream_id(CASE)}'"),
    "upper-case": (
        stream_id(CASE).hex.upper(),
        stream_id(CASE).hex.upper(),
        f"text '{stream_id(CASE).hex.upper()}'",
    ),
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("edit", [*ORIGINATOR_EDITS, "version"])
def test_a_stored_row_edited_out_of_its_stream_is_reported_not_a_crash(
    world: World, edit: str
) -> None:
    """A row whose originator id is no longer a stream id as the ledger writes it is
    read by no stream: verify names it (and the gap it left), and the notification
    log, which the integrator and verify's log pass read raw, comes out typed as
    always, the row's originator naming what is there and a bad version as -1."""
    three_events(world)
    assert isinstance(world.raw, SQLiteRaw)
    column, value = (
        ("originator_version", "two")
        if edit == "version"
        else ("originator_id", ORIGINATOR_EDITS[edit][0])
    )
    world.raw.db.execute(
        f"UPDATE {world.raw.table} SET {column} = "
        + ("CAST(? AS TEXT)" if edit == "not-utf-8" else "?")
        + " WHERE originator_id = ? AND originator_version = 2",
        (value, stream_id(CASE).hex),
    )
    rows = world.ledger.store.catalog.notifications_after(0, 1000)
    assert [tuple(map(type, r)) for r in rows] == [(int, str, int, bytes)] * len(rows)
    report = verify(world)
    assert not report.ok
    if edit == "version":
        assert [r[2] for r in rows].count(-1) == 1
        return
    _, logged, shown = ORIGINATOR_EDITS[edit]
    assert [r[1] for r in rows].count(logged) == 1
    named = [p for p in report.problems if p.stream == f"originator {shown}"]
    assert len(named) == 1 and "1 stored event(s)" in named[0].message
    assert any(p.stream == CASE for p in report.problems)  # the gap at seq 2


@pytest.mark.parametrize("attack", ["dropped", "planted", "retyped"])
def test_an_edited_event_index_is_named(world: World, attack: str) -> None:
    """`cases`, the sweep and reference lookups read the event index, not the hashed
    bytes: verify holds it to the stored events."""
    receipts = three_events(world)
    target = receipts[1].event_id
    if attack == "dropped":
        world.raw.on_index("DELETE FROM {t} WHERE event_id = ?", [target])
        needle = f"event {target} is missing from the event index"
    elif attack == "planted":
        world.raw.on_index(
            "INSERT INTO {t} VALUES (?,?,?,?,?,?,?,?)",
            ["ghost-1", "case/C-ghost", "00", 1, "CASE_CLOSED", "police-a", "x", "y"],
        )
        target, needle = "ghost-1", "names event 'ghost-1', which no stored event has"
    else:
        world.raw.on_index("UPDATE {t} SET type = 'CASE_CLOSED' WHERE event_id = ?", [target])
        needle = f"{target} disagree on type: index 'CASE_CLOSED', stored event 'CHILD_SEEN'"
    report = verify(world)
    assert not report.ok
    assert [p.event_id for p in report.problems] == [target]
    assert needle in report.problems[0].message


def test_events_appended_while_verify_runs_are_left_to_the_next_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An auditor may verify a ledger that is serving. Events appended after verify
    began, to a case it has read or not yet read or to a new case, are not taken
    for index rows planted without an event: the next run checks them."""
    three_events(world)
    world.append("csc-b", case_id="C-2")
    catalog = world.ledger.store.catalog
    before = catalog.count_events()
    real = catalog.last_position

    def then_append() -> int:
        upto = real()
        world.append("police-a")
        world.append("csc-b", case_id="C-2")
        world.append("police-a", case_id="C-3")
        return upto

    monkeypatch.setattr(catalog, "last_position", then_append)
    report = verify(world)
    assert report.ok, [p.describe() for p in report.problems]
    assert report.events == before
    monkeypatch.undo()
    report = verify(world)
    assert report.ok and report.events == before + 3


# Rebuilding the index table as a DBA could: without its key, with other column
# types or another collation. Each list is run in order on the index.
REBUILT = [
    "CREATE TABLE copy AS SELECT * FROM {t}",
    "DROP TABLE {t}",
    "ALTER TABLE copy RENAME TO {t}",
]
RETYPED = [
    # Columns without a type keep whatever is stored, text or number.
    "CREATE TABLE copy (event_id TEXT COLLATE NOCASE, stream TEXT, originator_id TEXT, "
    "seq, type TEXT COLLATE NOCASE, agency, occurred_at TEXT, recorded_at TEXT)",
    "INSERT INTO copy SELECT * FROM {t}",
    "DROP TABLE {t}",
    "ALTER TABLE copy RENAME TO {t}",
]
INDEX_ATTACKS = {
    "dropped": ["DELETE FROM {t} WHERE event_id = ?"],
    "duplicated": [*REBUILT, "INSERT INTO {t} SELECT * FROM {t} WHERE event_id = ?"],
    "seq as text": [*RETYPED, "UPDATE {t} SET seq = '2' WHERE event_id = ?"],
    "id case changed": [*RETYPED, "UPDATE {t} SET event_id = upper(event_id) WHERE event_id = ?"],
    "id as blob": ["UPDATE {t} SET event_id = CAST(event_id AS BLOB) WHERE event_id = ?"],
    "id null": ["UPDATE {t} SET event_id = NULL WHERE event_id = ?"],
    "agency as number": [*RETYPED, "UPDATE {t} SET agency = 7 WHERE event_id = ?"],
    "type case changed": [*RETYPED, "UPDATE {t} SET type = lower(type) WHERE event_id = ?"],
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("attack", list(INDEX_ATTACKS))
def test_the_index_compared_inside_sqlite_finds_what_reading_it_all_finds(
    world: World, attack: str
) -> None:
    """A SQLite ledger's index is compared by a join inside SQLite, which only picks
    the rows to compare exactly: it must miss nothing that reading every row finds,
    however the table was rebuilt."""
    receipts = three_events(world)
    world.append("csc-b", case_id="C-2")
    target = receipts[1].event_id
    for statement in INDEX_ATTACKS[attack]:
        world.raw.on_index(statement, [target] if "?" in statement else [])
    key = world.ledger.ledger_signer().public_bytes
    reports = [
        Auditor(world.ledger.store, key, index_in_database=inside).run() for inside in (True, False)
    ]
    found = [
        sorted((p.stream, p.seq, str(p.event_id), p.message) for p in r.problems) for r in reports
    ]
    assert found[0], f"{attack}: the index change went unnoticed"
    assert found[0] == found[1]
    # All about the one row attacked: the target's, at its seq.
    assert {p.seq for p in reports[0].problems} == {receipts[1].seq}
    assert any(target in str(p.event_id) for p in reports[0].problems)


def test_reused_event_id_is_named(world: World) -> None:
    receipts = three_events(world)
    # An event id reused in another case, written directly (the append path refuses it).
    body = world.body("police-a", case_id="C-2", event_id=receipts[0].event_id)
    body_bytes = canonical(body)
    env = envelope_bytes(
        body_bytes,
        world.signers["police-a"].sign_body(body_bytes),
        1,
        parse_envelope(world.raw.state(CASE, 3)).recorded_at,
        None,
    )
    world.raw.insert("case/C-2", 1, world.raw.topic(CASE, 1), env)
    report = verify(world)
    assert report.problem_count == 1
    assert "already used by case/C-1 seq 1" in report.problems[0].message


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_byte_change_is_detected(world: World, data: st.DataObject) -> None:
    """Any byte of any stored event, changed to any other value, fails verification.

    The events are covered by a checkpoint, as a running ledger's are within
    minutes: the chain catches changes that a later event links to, signatures
    catch changes to bodies, and the Merkle log catches the rest (such as the
    ledger-clock digits of a case's newest event).
    """
    if world.counter == 0:
        world.counter = 100
        three_events(world)
        world.ledger.checkpoint()
    version = data.draw(st.integers(1, 3), label="seq")
    state = world.raw.state(CASE, version)
    position = data.draw(st.integers(0, len(state) - 1), label="byte")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != state[position]), label="value")
    world.raw.set_state(CASE, version, state[:position] + bytes([value]) + state[position + 1 :])
    try:
        report = verify(world)
        assert not report.ok
        assert any(
            p.stream == CASE or f"{CASE} seq {version}" in p.message for p in report.problems
        )
    finally:
        world.raw.set_state(CASE, version, state)
    assert verify(world).ok


@pytest.mark.parametrize("attack", ["edit", "delete"])
def test_cli_verify_exits_1_naming_the_event(
    world: World, attack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main

    receipts = three_events(world)
    if attack == "edit":
        state = world.raw.state(CASE, 2)
        world.raw.set_state(CASE, 2, state.replace(b"CHILD_SEEN", b"CHILD_SEEM"))
    else:
        world.raw.delete(CASE, 2)
    code = main(["verify", "--db", world.url, "--keys", str(world.keys)])
    err = capsys.readouterr().err
    assert code == 1
    first = err.splitlines()[0]
    if attack == "edit":
        assert first.startswith(f"FAIL: case C-1 seq 2 (event {receipts[1].event_id})")
    else:
        assert first.startswith(f"FAIL: case C-1 seq 3 (event {receipts[2].event_id})")
        assert "seq 2 missing" in first
    assert "problem(s)" in err


def test_worker_processes_find_the_same_problem(world: World) -> None:
    """Large ledgers verify signatures in worker processes; they must catch edits too."""
    receipts = three_events(world)
    state = world.raw.state(CASE, 2)
    world.raw.set_state(CASE, 2, state.replace(b"CHILD_SEEN", b"CHILD_SEEM"))
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes, processes=True)
    # The edited event, the next one's broken link, and the index that still holds
    # the type as recorded.
    assert report.problem_count == 3
    assert "disagree on type: index 'CHILD_SEEN'" in report.problems[-1].message
    assert "signature does not verify" in report.problems[0].message
    assert report.problems[0].event_id == receipts[1].event_id
    assert report.signatures == 3 + 5  # case events in workers, registry in-process


@pytest.mark.parametrize(
    "topic",
    ["ledger.case:Case.Rucorded", "ledger.case:Case.Opened", "os:system", ""],
)
def test_an_edited_topic_is_named_and_the_ledger_still_reads_the_case(
    world: World, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The topic column is eventsourcing's name for the event's class, outside the
    signed record: the ledger reads each event as its envelope says, so an edit there
    neither breaks reading the case nor goes unnamed by verify."""
    from ledger.cli import main

    receipts = three_events(world)
    world.raw.set_topic(CASE, 2, topic)
    agency_stream = "agency/police-a"
    world.raw.set_topic(agency_stream, 2, "ledger.case:Agency.Recordxd")
    fresh = world.ledger.__class__.open(world.url, world.keys, create=False)
    try:  # a process that has cached nothing reads the rows
        assert [e.seq for e in fresh.case_envelopes("C-1")] == [1, 2, 3]
        assert fresh.agency("police-a").active_key(world.signers["police-a"].key_id)
    finally:
        fresh.close()
    assert main(["--db", world.url, "--keys", str(world.keys), "replay", "C-1"]) == 0
    assert main(["--db", world.url, "--keys", str(world.keys), "cases"]) == 0
    capsys.readouterr()
    report = verify(world)
    named = {(p.stream, p.seq, p.event_id) for p in report.problems if "topic" in p.message}
    assert (CASE, 2, receipts[1].event_id) in named
    assert (agency_stream, 2) in {(s, n) for s, n, _ in named}
    assert len(report.problems) == 2, report.problems


def test_an_untouched_ledger_has_no_odd_topics(world: World) -> None:
    three_events(world)
    world.ledger.add_agency_key("police-a")
    world.ledger.record_access("C-1", "panel-1", "panel", "test")
    report = verify(world)
    assert report.ok, report.problems


@pytest.mark.parametrize("where", ["case", "agency"])
def test_a_stored_event_that_cannot_be_read_is_one_clear_line_not_a_traceback(
    world: World, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay, the case list and appends read stored rows too: one that no envelope
    can be read from (or that is another stream's) is named where it is and sends the
    reader to verify, as one line on stderr with exit 1."""
    from ledger.cli import main
    from ledger.core import Ledger

    three_events(world)
    stream, version = (CASE, 2) if where == "case" else ("agency/police-a", 1)
    world.raw.set_state(stream, version, world.raw.state(CASE, 3) if where == "agency" else b"{")
    fresh = Ledger.open(world.url, world.keys, create=False)
    try:
        read = (
            (lambda: fresh.case_envelopes("C-1"))
            if where == "case"
            else (lambda: fresh.agency("police-a"))
        )
        with pytest.raises(IntegrityError, match="cannot be read") as caught:
            read()
        assert "ledger verify" in str(caught.value)
        assert (f"{version} of" in str(caught.value)) and (
            where == "case" or "it is an event of case/C-1" in str(caught.value)
        )
    finally:
        fresh.close()
    args = ["--db", world.url, "--keys", str(world.keys)]
    for command in (["replay", "C-1"], ["cases"]):
        code = main([*args, *command])
        err = capsys.readouterr().err
        assert code == 1, (command, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "cannot be read" in err and "ledger verify" in err
    assert main([*args, "verify"]) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_registry_row_moved_out_of_its_stream_is_reported_not_a_crash(world: World) -> None:
    """Verify finds the registry streams by their first rows' topics: one whose
    originator id an edit made no stream id at all must be reported, not crash it."""
    three_events(world)
    assert isinstance(world.raw, SQLiteRaw)
    oid = stream_id("agency/police-a").hex
    world.raw.db.execute(
        f"UPDATE {world.raw.table} SET originator_id = ? "
        "WHERE originator_id = ? AND originator_version = 1",
        (oid[:-1] + "g", oid),
    )
    report = verify(world)
    assert not report.ok
    assert any(p.stream == f"originator text '{oid[:-1]}g'" for p in report.problems)
    assert any(p.stream == "agency/police-a" for p in report.problems)


@pytest.mark.parametrize("edit", ["opening deleted", "renumbered"])
def test_an_agency_stream_broken_behind_the_ledgers_back_is_one_clear_line(
    world: World, edit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agency's keys are replayed from its stream: one whose opening event was
    deleted, or whose later event was renumbered, cannot be, and every command that
    needs the agency says so in one line (and verify names the rows)."""
    from ledger.cli import main

    three_events(world)
    stream = "agency/police-a"
    if edit == "opening deleted":
        world.raw.delete(stream, 1)
    else:
        state, topic = world.raw.state(stream, 2), world.raw.topic(stream, 2)
        world.raw.delete(stream, 2)
        world.raw.insert(stream, 1002, topic, state)
    args = ["--db", world.url, "--keys", str(world.keys)]
    for command in (["cases"], ["replay", "C-1"], ["agency", "rotate-key", "police-a"]):
        code = main([*args, *command])
        err = capsys.readouterr().err
        assert code == 1, (command, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"in {stream} cannot be read" in err and "ledger verify" in err, err
    assert main([*args, "verify"]) == 1
