"""The verifiable log on both stores: proofs, checkpoints, and attacks after publication."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

from ledger.audit import AuditReport, audit
from ledger.canonical import canonical, envelope_bytes
from ledger.checkpoint import Checkpoint, verify_checkpoint
from ledger.log import VerifiableLog
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.verify import parse_envelope, stream_id
from tests.conftest import World

CASE = "case/C-1"


def verify(world: World) -> AuditReport:
    return audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)


def some_events(world: World, n: int = 5) -> list[Any]:
    return [world.append("police-a" if i % 2 else "csc-b") for i in range(n)]


def test_every_event_is_provably_in_the_checkpoint(world: World) -> None:
    some_events(world)
    first = verify_checkpoint(world.ledger.checkpoint(), world.ledger.log_verifier())
    more = some_events(world, 4)
    second = verify_checkpoint(world.ledger.checkpoint(), world.ledger.log_verifier())
    assert second.size == first.size + 4
    log = world.ledger.log
    for index in range(second.size):
        p = log.inclusion(index, second.size)
        verify_inclusion(index, second.size, p.leaf_hash, p.hashes, second.root)
    # An event found by its hash, with a proof against the older checkpoint too.
    index = log.leaf_index_of(more[0].event_hash)
    state = world.raw.state(CASE, more[0].seq)
    assert log.inclusion(index).leaf_hash == leaf_hash(state)
    c = log.consistency(first.size, second.size)
    verify_consistency(first.size, second.size, c.hashes, first.root, second.root)
    report = verify(world)
    assert report.ok, report.problems
    assert (report.leaves, report.checkpoints) == (second.size, 2)


def test_deleting_the_newest_event_after_a_checkpoint_is_named(world: World) -> None:
    receipts = some_events(world, 3)
    world.ledger.checkpoint()
    world.raw.delete(CASE, 3)  # the chain alone cannot see this: nothing follows it
    report = verify(world)
    assert not report.ok
    messages = [p.describe() for p in report.problems]
    assert any("case/C-1 seq 3" in m and "no longer stored (deleted)" in m for m in messages)
    assert any("events were deleted after it was published" in m for m in messages)
    assert receipts[2].event_hash in " ".join(messages)


def test_backdating_the_newest_events_ledger_time_is_caught(world: World) -> None:
    some_events(world, 3)
    world.ledger.checkpoint()
    state = world.raw.state(CASE, 3)
    old = parse_envelope(state).recorded_at
    new = old[:-7] + ("000001Z" if old[-7:] != "000001Z" else "000002Z")
    world.raw.set_state(CASE, 3, state.replace(old.encode(), new.encode()))
    report = verify(world)
    assert not report.ok
    messages = [p.describe() for p in report.problems]
    assert any("case/C-1 seq 3" in m and "altered after integration" in m for m in messages)


def rewrite_case_history(world: World) -> None:
    """What an insider holding an agency key and the database can do: change seq 2,
    re-sign it as the agency, rebuild the chain after it, and re-integrate the tree."""
    old2 = parse_envelope(world.raw.state(CASE, 2))
    body = json.loads(old2.body_bytes)
    body["payload"] = {**body["payload"], "summary": "nothing of concern"}
    signer = world.signers[body["agency"]]
    body_bytes = canonical(body)
    new2 = envelope_bytes(
        body_bytes, signer.sign_body(body_bytes), 2, old2.recorded_at, old2.prev_hash
    )
    world.raw.set_state(CASE, 2, new2)
    prev = parse_envelope(new2).event_hash
    for seq in range(3, len(world.ledger.case_envelopes("C-1")) + 1):
        old = parse_envelope(world.raw.state(CASE, seq))
        rebuilt = envelope_bytes(old.body_bytes, old.sig, seq, old.recorded_at, prev)
        world.raw.set_state(CASE, seq, rebuilt)
        prev = parse_envelope(rebuilt).event_hash
    cache = world.ledger.app.repository.cache
    if cache is not None:  # as if the rewritten ledger were restarted
        cache.get(stream_id(CASE), evict=True)
    log = world.ledger.log
    with log.db.write() as cur:
        cur.execute("DELETE FROM merkle_leaves")
        cur.execute("DELETE FROM merkle_nodes")
    log.integrate_all()


def test_rewritten_and_resigned_history_is_caught_by_the_checkpoint(world: World) -> None:
    some_events(world, 3)
    world.ledger.checkpoint()
    rewrite_case_history(world)
    report = verify(world)
    assert not report.ok
    # Chains and signatures are consistent again; only the signed checkpoint disagrees.
    assert all(p.stream == "log" for p in report.problems)
    assert "checkpoint at size" in report.problems[0].message
    assert "stored events give" in report.problems[0].message


def test_failed_integration_leaves_the_tree_as_it_was(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    some_events(world, 3)
    log = world.ledger.log
    log.integrate_all()
    before = log.size()
    some_events(world, 2)
    import ledger.merkle as logmod

    original = logmod.CompactRange.append
    calls = {"n": 0}

    def crash(self: Any, leaf: bytes) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return original(self, leaf)

    monkeypatch.setattr(logmod.CompactRange, "append", crash)
    with pytest.raises(RuntimeError):
        log.integrate()
    monkeypatch.undo()
    assert log.size() == before
    assert log.integrate_all() == 2
    world.ledger.checkpoint()
    assert verify(world).ok


def test_concurrent_integrators_build_one_tree(world: World) -> None:
    some_events(world, 40)
    logs = [VerifiableLog(world.ledger.store) for _ in range(3)]
    errors: list[BaseException] = []

    def run(log: VerifiableLog) -> None:
        try:
            for _ in range(20):
                log.integrate(limit=3)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(log,)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    assert errors == []
    assert world.ledger.log.size() == world.ledger.store.catalog.count_events()
    world.ledger.checkpoint()
    report = verify(world)
    assert report.ok, report.problems


def test_forged_checkpoint_signature_is_named(world: World) -> None:
    some_events(world, 2)
    note = world.ledger.checkpoint()
    cp = Checkpoint.parse(note.split("\n\n")[0] + "\n")
    forged = note.replace(
        base64.b64encode(cp.root).decode(), base64.b64encode(b"\x00" * 32).decode()
    )
    with world.ledger.log.db.write() as cur:
        cur.execute(
            "UPDATE log_checkpoints SET note = ?, root = ? WHERE tree_size = ?",
            (forged, b"\x00" * 32, cp.size),
        )
    report = verify(world)
    assert not report.ok
    assert "does not verify" in report.problems[0].message


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("UPDATE merkle_leaves SET event_hash = NULL WHERE leaf_index = 1", ()),
        ("UPDATE merkle_leaves SET notification_id = 'x' WHERE leaf_index = 1", ()),
        ("UPDATE merkle_nodes SET hash = 'not bytes' WHERE level = 1 AND idx = 0", ()),
        ("UPDATE merkle_leaves SET leaf_hash = 'text' WHERE leaf_index = 1", ()),
        ("UPDATE log_checkpoints SET note = ?", ("\x00garbage",)),
    ],
)
def test_garbled_log_rows_are_reported_not_a_crash(
    world: World, statement: str, params: tuple[Any, ...]
) -> None:
    some_events(world, 3)
    world.ledger.checkpoint()
    refused = False
    try:
        with world.ledger.log.db.write() as cur:
            cur.execute(statement, params)
    except Exception:
        refused = True  # the database's own types or constraints refuse this edit
    report = verify(world)
    if refused:
        assert report.ok  # the edit never happened
    else:
        assert not report.ok and report.problems[0].stream == "log"


def test_a_key_revocation_is_pinned_by_a_checkpoint_at_once(world: World) -> None:
    """verify judges a key's later use by the revocation's place in commit order; a
    signed checkpoint fixes that place before anyone could move events ahead of it."""
    some_events(world, 2)
    before = len(world.ledger.log.checkpoints())
    world.ledger.add_agency_key("police-a")
    world.ledger.revoke_agency_key("police-a", world.signers["police-a"].key_id, "lost")
    checkpoints = world.ledger.log.checkpoints()
    assert len(checkpoints) == before + 1
    assert checkpoints[-1][0] == world.ledger.store.catalog.count_events()


def rewrite_and_resign(world: World) -> None:
    """The operator rewrites history, re-integrates, drops the stored checkpoints and
    their cosignatures, and signs a fresh checkpoint over more events."""
    rewrite_case_history(world)
    with world.ledger.log.db.write() as cur:
        cur.execute("DELETE FROM log_cosignatures")
        cur.execute("DELETE FROM log_checkpoints")
    some_events(world, 1)
    world.ledger.checkpoint()


def witness(world: World, state: Any, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from ledger.cli import main

    code = main(
        [
            "log",
            "witness",
            "--state",
            str(state),
            "--db",
            world.url,
            "--keys",
            str(world.keys),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_witness_cosigns_growth_and_refuses_rewritten_history(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.checkpoint import NoteVerifier, verify_cosignature

    state = tmp_path / "witness"
    some_events(world, 3)
    world.ledger.checkpoint()
    code, out = witness(world, state, capsys)
    assert code == 0, out
    first = json.loads(out)
    assert first["previous_size"] is None
    some_events(world, 2)
    world.ledger.checkpoint()
    code, out = witness(world, state, capsys)
    assert code == 0, out
    second = json.loads(out)
    assert second["previous_size"] == first["tree_size"]
    served = world.ledger.log.latest_checkpoint()
    assert verify_cosignature(served, NoteVerifier.parse(second["verifier_key"])) > 0
    assert verify(world).ok
    rewrite_and_resign(world)
    assert verify(world).ok  # the database alone now looks clean...
    code, out = witness(world, state, capsys)
    assert code == 1  # ...but the witness holds the older checkpoint
    assert "REFUSED" in out and "not consistent" in out
    assert "--- checkpoint this witness holds ---" in out
    assert f"\n{second['tree_size']}\n" in out


def test_witness_refuses_a_shrunken_log(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "witness"
    some_events(world, 4)
    world.ledger.checkpoint()
    assert witness(world, state, capsys)[0] == 0
    world.raw.delete(CASE, 4)
    log = world.ledger.log
    with log.db.write() as cur:
        cur.execute("DELETE FROM merkle_leaves")
        cur.execute("DELETE FROM merkle_nodes")
        cur.execute("DELETE FROM log_cosignatures")
        cur.execute("DELETE FROM log_checkpoints")
    world.ledger.checkpoint()
    code, out = witness(world, state, capsys)
    assert code == 1
    assert "shrank" in out


def test_merkle_pass_in_a_worker_process_names_a_deletion(world: World) -> None:
    some_events(world, 3)
    world.ledger.checkpoint()
    world.raw.delete(CASE, 3)
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes, processes=True)
    messages = [p.describe() for p in report.problems]
    assert any("case/C-1 seq 3" in m and "no longer stored (deleted)" in m for m in messages)
    assert report.checkpoints == 1


def anchored(world: World, anchors: list[tuple[str, str]], processes: bool = False) -> AuditReport:
    key = world.ledger.ledger_signer().public_bytes
    return audit(world.ledger.store, key, processes=processes, anchors=anchors)


@pytest.mark.parametrize("processes", [False, True])
def test_a_checkpoint_held_outside_catches_history_the_operator_rewrote(
    world: World, processes: bool
) -> None:
    """Whoever holds the database and the log key can rewrite events, log and stored
    checkpoints to agree again; a checkpoint kept elsewhere still disagrees."""
    some_events(world, 3)
    held = [("auditor copy", world.ledger.checkpoint())]
    assert anchored(world, held, processes).anchors == 1
    assert anchored(world, held, processes).ok
    rewrite_and_resign(world)
    assert verify(world).ok  # the database alone looks clean
    report = anchored(world, held, processes)
    assert [p.stream for p in report.problems] == ["log"]
    message = report.problems[0].message
    assert "held outside the ledger (auditor copy)" in message
    assert "history before it was rewritten" in message


def test_a_checkpoint_held_outside_names_events_deleted_from_a_shrunken_log(
    world: World,
) -> None:
    receipts = some_events(world, 4)
    held = [("witness copy", world.ledger.checkpoint())]
    world.raw.delete(CASE, 4)  # and its index row: the operator covers every trace
    world.raw.on_index("DELETE FROM {t} WHERE event_id = ?", [receipts[3].event_id])
    with world.ledger.log.db.write() as cur:
        for table in ("merkle_leaves", "merkle_nodes", "log_cosignatures", "log_checkpoints"):
            cur.execute(f"DELETE FROM {table}")
    world.ledger.checkpoint()
    assert verify(world).ok  # the newest event of a case leaves no gap behind it
    report = anchored(world, held)
    assert len(report.problems) == 1
    assert "(witness copy) is at size" in report.problems[0].message
    assert "were deleted since" in report.problems[0].message


def test_a_checkpoint_from_another_log_is_named(world: World) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.checkpoint import sign_note

    some_events(world, 2)
    note = world.ledger.checkpoint()
    body = note[: note.index("\n\n") + 1]
    forged = sign_note(body, body.split("\n")[0], Ed25519PrivateKey.generate())
    report = anchored(world, [("forged", forged)])
    assert report.anchors == 0
    assert any("(forged) is not one of this ledger's log" in p.message for p in report.problems)


def test_verify_takes_checkpoints_held_outside_as_notes_or_bundles(
    world: World, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.bundle import export_bundle
    from ledger.cli import main

    some_events(world, 3)
    note = tmp_path / "checkpoint.txt"
    note.write_text(world.ledger.checkpoint())
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(export_bundle(world.ledger, "C-1")))
    some_events(world, 2)
    world.ledger.checkpoint()
    base = ["verify", "--db", world.url, "--keys", str(world.keys)]
    code = main([*base, "--checkpoint", str(note), "--checkpoint", str(bundle)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "agreeing with 2 checkpoint(s) held outside" in out.out
    # As an editor may save it: with a byte-order mark and CRLF line ends.
    edited = tmp_path / "edited.txt"
    edited.write_bytes(b"\xef\xbb\xbf" + note.read_bytes().replace(b"\n", b"\r\n"))
    assert main([*base, "--checkpoint", str(edited)]) == 0, capsys.readouterr().err
    world.raw.delete(CASE, 5)
    code = main([*base, "--checkpoint", str(note)])
    assert code == 1
    lines = note.read_text().split("\n")
    odd = {
        "junk": ("not a note\n", "is not a signed checkpoint"),
        "huge size": ("\n".join([lines[0], "9" * 5000, *lines[2:]]), "bad checkpoint"),
        "unicode digit": ("\n".join([lines[0], "\u00b2", *lines[2:]]), "bad checkpoint"),
        "huge number": ('{"checkpoint": "x", "n": ' + "1" * 5000 + "}", "not usable JSON"),
        "deep": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests too deeply"),
        "no bundle": ('{"checkpoint": 5}', "no bundle with a 'checkpoint' member"),
        "binary": ("\udcff", "not UTF-8"),
    }
    for name, (content, says) in odd.items():
        path = tmp_path / f"{name}.txt"
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
        capsys.readouterr()
        assert main([*base, "--checkpoint", str(path)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, (name, err)
    capsys.readouterr()
    assert main([*base, "--checkpoint", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read checkpoint file" in capsys.readouterr().err


def test_a_checkpoint_held_outside_of_the_empty_log_must_sign_its_root(world: World) -> None:
    """Size 0 has no leaf to wait for: it is compared with the empty tree at once."""
    from ledger.checkpoint import sign_note
    from ledger.merkle import EMPTY_ROOT

    some_events(world, 1)
    origin = world.ledger.origin()
    key = world.ledger.ledger_signer().private_key
    good = sign_note(Checkpoint(origin, 0, EMPTY_ROOT).body(), origin, key)
    bad = sign_note(Checkpoint(origin, 0, b"\x01" * 32).body(), origin, key)
    assert anchored(world, [("empty", good)]).ok
    report = anchored(world, [("wrong", bad)])
    assert report.problem_count == 1
    assert "(wrong) signed root" in report.problems[0].message


class Watched:
    """The log as a witness sees it, noting what the witness held on disk at the moment
    each cosignature left it."""

    def __init__(self, log: VerifiableLog, state: Any) -> None:
        self.log, self.state = log, state
        self.held_when_published: list[str] = []

    def consistency(self, first: int, second: int) -> Any:
        return self.log.consistency(first, second)

    def add_cosignature(self, size: int, witness: Any, line: str) -> None:
        self.held_when_published.append((self.state / "checkpoint").read_text())
        self.log.add_cosignature(size, witness, line)


def test_a_witness_remembers_a_checkpoint_before_its_cosignature_leaves(
    world: World, tmp_path: Any
) -> None:
    """Else a crash in between would leave it judging the next checkpoint against an
    older one, and it could cosign a fork of the log it has just cosigned."""
    from ledger.witness import Witness

    state = tmp_path / "witness"
    witness = Witness(state)
    log = Watched(world.ledger.log, state)
    notes = []
    for count in (2, 3):
        some_events(world, count)
        notes.append(world.ledger.checkpoint())
        witness.witness(log, notes[-1], world.ledger.log_verifier())
    assert log.held_when_published == notes
    assert not [p.name for p in state.iterdir() if p.name.startswith(".")]  # no temporary left


def test_one_witness_run_at_a_time_on_a_state_directory(world: World, tmp_path: Any) -> None:
    import fcntl

    from ledger.witness import Witness

    state = tmp_path / "witness"
    witness = Witness(state)
    some_events(world, 2)
    note = world.ledger.checkpoint()
    done: list[Any] = []
    with open(state / "lock", "a") as other:  # another run holds the directory
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        run = threading.Thread(
            target=lambda: done.append(
                witness.witness(world.ledger.log, note, world.ledger.log_verifier())
            )
        )
        run.start()
        run.join(timeout=0.5)
        assert run.is_alive() and not done
        assert not (state / "checkpoint").exists()
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    run.join(timeout=30)
    assert len(done) == 1 and (state / "checkpoint").read_text() == note


@pytest.mark.parametrize("events", [6, 7])  # the newest leaf a right child, then a left one
def test_a_leaf_deleted_after_integration_is_named_and_stops_the_integrator_cleanly(
    world: World, events: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest leaf's row deleted after a checkpoint covered it: the stored log then
    looks like one the integrator has not caught up with, but a signed checkpoint and
    the tree's nodes still record the leaf. Verify names it; integrating again either
    rebuilds the same leaf or stops in one line, never over the nodes it holds."""
    from ledger.cli import main

    some_events(world, events - world.ledger.store.catalog.count_events())
    note = world.ledger.checkpoint()
    size = verify_checkpoint(note, world.ledger.log_verifier()).size
    assert size == events
    with world.ledger.log.db.write() as cur:
        cur.execute("DELETE FROM merkle_leaves WHERE leaf_index = ?", (size - 1,))
    report = verify(world)
    assert not report.ok
    assert any("leaves were deleted after integration" in p.message for p in report.problems)
    code = main(["--db", world.url, "--keys", str(world.keys), "log", "checkpoint"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == (0 if size % 2 else 1)  # a node records a right child, none a left one
    if code == 0:  # no node recorded the leaf: integrated again, the same leaf
        assert (
            world.ledger.log.root(size) == verify_checkpoint(note, world.ledger.log_verifier()).root
        )
    else:
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "Merkle log is damaged" in err and "ledger verify" in err


def test_a_sqlite_error_stays_itself_where_psycopg_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log's cursor names a taken row key for either driver, without importing
    psycopg (the `postgres` extra) to look at a SQLite error that is something else."""
    import sqlite3
    import sys

    from ledger.logdb import DuplicateRow, _duplicates_named

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(sqlite3.OperationalError), _duplicates_named():
        raise sqlite3.OperationalError("database is locked")
    with pytest.raises(DuplicateRow), _duplicates_named():
        raise sqlite3.IntegrityError("UNIQUE constraint failed: merkle_leaves.idx")
    with pytest.raises(sqlite3.IntegrityError), _duplicates_named():
        raise sqlite3.IntegrityError("NOT NULL constraint failed: merkle_leaves.hash")
