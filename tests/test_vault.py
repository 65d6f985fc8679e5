"""The vault on both stores: sealed identifying data, access-logged reads, crypto-shredding
that leaves every proof valid, legal holds, wrong keys and tampered ciphertext."""

from __future__ import annotations

import base64
import subprocess
from datetime import date
from pathlib import Path

import pytest

from ledger.audit import audit
from ledger.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    KeyFileError,
    NotFound,
    UsageError,
)
from ledger.vault import ERASED, Vault, age_band
from tests.conftest import World

NAME, DOB, ADDRESS = "Zelda Quintrell-Okafor", "2008-02-29", "17 Larkspur Mews, SE11 4QQ"


def raw_bytes(world: World) -> bytes:
    """Everything the database holds, as an operator could read it."""
    if world.url.startswith("sqlite:///"):
        base = Path(world.url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in base.parent.glob(base.name + "*"))
    schema = world.url.split("schema=")[1]
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-n", schema, "test"],
        capture_output=True,
        check=True,
    )
    return dump.stdout


def test_the_database_holds_no_plaintext_identifiers(world: World) -> None:
    vault = Vault(world.ledger)
    ref = vault.add(NAME, DOB, ADDRESS)
    assert ref == vault.add(NAME.upper(), DOB)  # the same person gets the same reference
    assert ref.startswith("child_")
    world.append("police-a", payload={"child_ref": ref})
    world.ledger.checkpoint()
    dump = raw_bytes(world)
    for secret in (NAME, DOB, ADDRESS, "Quintrell", "Larkspur"):
        assert secret.encode() not in dump, secret
    shown = vault.show(ref, "panel-1", "case review")
    assert (shown.name, shown.dob, shown.address) == (NAME, DOB, ADDRESS)
    reads = world.ledger.access_log(f"subject:{ref}")
    assert [e.body["payload"]["reader"] for e in reads] == ["panel-1"]


def test_erasure_destroys_the_data_and_everything_still_verifies(world: World) -> None:
    vault = Vault(world.ledger)
    ref = vault.add(NAME, DOB, ADDRESS)
    world.append("police-a", payload={"child_ref": ref})
    world.ledger.checkpoint()
    vault.erase(ref, "retention period ended")
    assert vault.show(ref, "panel-1", "check").name == ERASED
    with vault.db.read() as cur:
        row = cur.execute(
            "SELECT wrapped_key, ciphertext FROM vault_subjects WHERE ref = ?", (ref,)
        ).fetchone()
    assert row == (None, None)
    assert NAME.encode() not in raw_bytes(world)
    world.ledger.checkpoint()
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems
    erased = [e for e in world.ledger.stream_envelopes("ledger") if e.type == "SUBJECT_ERASED"]
    assert erased[0].body["payload"]["subject_ref"] == ref
    with pytest.raises(Conflict, match="already erased"):
        vault.erase(ref, "again")


def test_a_legal_hold_blocks_erasure(world: World) -> None:
    vault = Vault(world.ledger)
    ref = vault.add(NAME, DOB)
    world.append("police-a", case_id="HELD-1", payload={"child_ref": ref})
    vault.hold("HELD-1", "IICSA moratorium")
    with pytest.raises(Conflict, match=r"legal hold .*HELD-1: IICSA moratorium"):
        vault.erase(ref, "retention")
    vault.hold("HELD-1", "", on=False)
    vault.hold(ref, "subject access request pending")
    with pytest.raises(Conflict, match="legal hold"):
        vault.erase(ref, "retention")
    vault.hold(ref, "", on=False)
    vault.erase(ref, "retention")
    for typo in ("HELD-2", "person_" + "a" * 26):  # a hold must name something held here
        with pytest.raises(NotFound, match="no case or subject"):
            vault.hold(typo, "mistyped")


def test_a_wrong_master_key_is_refused_and_writes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = Vault(world.ledger)
    vault.add(NAME, DOB)
    monkeypatch.setenv("LEDGER_MASTER_KEY", base64.b64encode(b"\x07" * 32).decode())
    with pytest.raises(KeyFileError, match="wrong master key"):
        Vault(world.ledger)
    with vault.db.read() as cur:
        assert cur.execute("SELECT COUNT(*) FROM vault_subjects").fetchone()[0] == 1


def test_tampered_ciphertext_is_caught_by_its_tag(world: World) -> None:
    vault = Vault(world.ledger)
    ref = vault.add(NAME, DOB)
    with vault.db.write() as cur:
        sealed = bytes(
            cur.execute("SELECT ciphertext FROM vault_subjects WHERE ref = ?", (ref,)).fetchone()[0]
        )
        flipped = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
        cur.execute("UPDATE vault_subjects SET ciphertext = ? WHERE ref = ?", (flipped, ref))
    with pytest.raises(IntegrityError, match=f"subject {ref}: .*tag does not verify"):
        vault.show(ref, "panel-1", "check")


def test_subject_cli(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.cli import main

    argv = ["--db", world.url, "--keys", str(world.keys)]
    assert main(["subject", "add", "--name", NAME, "--dob", DOB, *argv]) == 0
    ref = capsys.readouterr().out.strip()
    assert main(["subject", "show", ref, "--reason", "review", *argv]) == 0
    assert NAME in capsys.readouterr().out
    assert main(["subject", "show", ref, "--reason", "inquiry", "--view", "panel", *argv]) == 0
    shown = capsys.readouterr().out
    assert "age_band: 16-17" in shown or "age_band: 18-24" in shown
    assert NAME not in shown and DOB not in shown
    assert main(["hold", "set", ref, "--reason", "inquiry", *argv]) == 0
    capsys.readouterr()
    assert main(["subject", "erase", ref, "--reason", "retention", *argv]) == 1
    assert "legal hold" in capsys.readouterr().err
    assert main(["hold", "clear", ref, *argv]) == 0
    assert main(["subject", "erase", ref, "--reason", "retention", *argv]) == 0


@pytest.mark.parametrize(
    ("dob", "band"),
    [
        ("2026-11-25", "0-4"),
        ("2021-11-26", "0-4"),
        ("2021-11-25", "5-9"),
        ("2013-11-26", "10-12"),
        ("2013-11-25", "13-15"),
        ("2010-11-25", "16-17"),
        ("2008-11-26", "16-17"),
        ("2008-11-25", "18-24"),
        ("2001-11-25", "25+"),
        ("2027-01-01", None),
        (None, None),
    ],
)
def test_age_bands_turn_on_the_birthday(dob: str | None, band: str | None) -> None:
    assert age_band(dob, date(2026, 11, 25)) == band


def test_role_views_of_a_subject(world: World) -> None:
    vault = Vault(world.ledger)
    ref = vault.add(NAME, DOB, ADDRESS, borough="Lambeth")
    full = vault.view(ref, "full", "operator", "case review")
    assert (full["name"], full["dob"], full["address"], full["borough"]) == (
        NAME,
        DOB,
        ADDRESS,
        "Lambeth",
    )
    panel = vault.view(ref, "panel", "panel-1", "inquiry", on=date(2024, 3, 3))
    assert panel == {"ref": ref, "kind": "child", "age_band": "16-17", "borough": "Lambeth"}
    auditor = vault.view(ref, "auditor", "auditor-1", "audit")
    assert set(auditor) == {"ref", "kind", "added_at", "erased_at"}
    assert auditor["erased_at"] is None
    # Decrypting views are on the access log with who and why; the auditor's is not a decryption.
    summaries = [e.body["payload"]["summary"] for e in world.ledger.access_log(f"subject:{ref}")]
    assert summaries == ["vault show: full view: case review", "vault show: panel view: inquiry"]
    assert [e.body["payload"]["reader"] for e in world.ledger.access_log(f"subject:{ref}")] == [
        "operator",
        "panel-1",
    ]
    vault.erase(ref, "retention")
    assert vault.view(ref, "panel", "panel-1", "inquiry")["age_band"] == ERASED
    assert vault.view(ref, "auditor", "auditor-1", "audit")["erased_at"] is not None
    with pytest.raises(UsageError):
        vault.view(ref, "everyone", "x", "y")
    with pytest.raises(Forbidden):  # no agency supplied this subject
        vault.view(ref, "agency", "x", "y", agency="police-a")
    with pytest.raises(UsageError):
        vault.add("Someone", "29/02/2008")


def test_unreadable_or_exposed_vault_keys_are_one_clear_error(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_MASTER_KEY", "not base64!")
    with pytest.raises(KeyFileError, match="does not hold a 32-byte key"):
        Vault(world.ledger)
    monkeypatch.delenv("LEDGER_MASTER_KEY")
    Vault(world.ledger)  # creates KEYS/master.key, 0600
    (world.keys / "master.key").chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        Vault(world.ledger)
