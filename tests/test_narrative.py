"""Narrative on both stores: committed in the chain, sealed in the vault under a key per
case, shown per role, refused when it does not match, crypto-shredded at end of retention."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.audit import audit
from ledger.core import Submission
from ledger.errors import Conflict, IntegrityError, KeyFileError, ValidationError
from ledger.narrative import NarrativeText, from_wire, mask, seal_body
from ledger.obligations import SEALED
from ledger.policy import load_policy
from ledger.report import replay_case
from ledger.vault import ERASED
from ledger.verify import narrative_commitment
from tests.conftest import World
from tests.test_vault import raw_bytes

NAME = "Zelda Quintrell-Okafor"
RATIONALE = (
    "Spoke to Zelda Quintrell-Okafor at 17 Larkspur Mews, SE11 4QQ (07700 900123); "
    "she is streetwise and chose to go with the driver of AB12 CDE."
)
SUMMARY = "Strategy discussion by phone with Kestrelford school"


def _append(world: World, agency: str = "police-a", case_id: str = "C-1", **payload: Any) -> Any:
    signer = world.signers[agency]
    draft = world.body(agency, case_id, payload={**payload})
    return world.ledger.append(Submission.signed(draft, signer))


def _events(world: World) -> int:
    return world.ledger.store.catalog.count_events()


def _raw_exec(world: World, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Run SQL on the database directly, behind the ledger's back."""
    if world.url.startswith("sqlite:///"):
        with sqlite3.connect(world.url.removeprefix("sqlite:///"), isolation_level=None) as c:
            return c.execute(sql, params).fetchall()
    schema = world.url.split("schema=")[1]
    with psycopg.connect(world.url.split("?")[0], autocommit=True) as c:
        c.execute(SQL("SET search_path TO {}").format(Identifier(schema)))
        cur = c.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


def test_narrative_is_committed_in_the_chain_and_sealed_in_the_vault(world: World) -> None:
    child = world.ledger.vault().add(NAME, "2008-02-29")
    receipt = _append(world, child_ref=child, rationale=RATIONALE, summary=SUMMARY)
    env = world.ledger.case_envelopes("C-1")[-1]
    assert env.event_hash == receipt.event_hash
    assert env.body["v"] == 2
    assert "rationale" not in env.body["payload"] and "summary" not in env.body["payload"]
    assert set(env.body["narrative"]) == {"rationale", "summary"}
    world.ledger.checkpoint()
    dump = raw_bytes(world)  # the SQLite files, or a pg_dump of the schema
    for secret in (RATIONALE, SUMMARY, "Larkspur", "streetwise", "Kestrelford", "AB12 CDE"):
        assert secret.encode() not in dump, secret
    full = world.ledger.vault().narrative_view("C-1", [env], "full")
    assert full == {env.event_id: {"rationale": RATIONALE, "summary": SUMMARY}}
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_each_role_sees_narrative_as_it_may(world: World) -> None:
    vault = world.ledger.vault()
    child = vault.add(NAME, "2008-02-29")
    _append(world, child_ref=child, rationale=RATIONALE)
    _append(world, "csc-b", summary="Closed by Croydon; see notes")
    envs = world.ledger.case_envelopes("C-1")
    police, csc = envs[-2].event_id, envs[-1].event_id

    panel = vault.narrative_view("C-1", envs, "panel", "panel-1", "inquiry")
    text = panel[police]["rationale"]
    for identifier in ("Zelda", "Quintrell-Okafor", "Larkspur", "SE11 4QQ", "07700", "AB12 CDE"):
        assert identifier not in text, identifier
    assert f"[{child}]" in text and "streetwise and chose to go" in text
    # Masking the names decrypted them: that is on the subject's access log, with who and why.
    reads = world.ledger.access_log(f"subject:{child}")
    assert [e.body["payload"]["reader"] for e in reads] == ["panel-1"]
    assert "mask names in C-1: inquiry" in reads[0].body["payload"]["summary"]
    # Decrypting the case's narrative is on the case's access log.
    assert any(
        e.body["payload"]["summary"] == "vault narrative: inquiry"
        for e in world.ledger.access_log("C-1")
    )

    own = vault.narrative_view("C-1", envs, "agency", "police-user", "read", agency="police-a")
    assert own == {police: {"rationale": RATIONALE}}
    assert csc not in own
    assert vault.narrative_view("C-1", envs, "auditor", "auditor-1", "audit") == {}

    sealed = replay_case(world.ledger, "C-1", load_policy())  # no view: nothing decrypted
    assert {row["action"] for row in sealed.chronology if row["event_id"] == police} == {SEALED}
    shown = replay_case(world.ledger, "C-1", load_policy(), view="full", reader="op")
    assert any(row["action"] == RATIONALE for row in shown.chronology)
    assert any(f.kind == "language" and f.text == "streetwise" for f in shown.flags)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("v1-plain", "must be sealed in the vault"),
        ("v2-plain", "only as a commitment"),
        ("text-missing", "its text was not sent"),
        ("text-altered", "does not match its commitment"),
        ("text-extra", "commits to none"),
    ],
)
def test_narrative_that_does_not_match_is_refused_and_writes_nothing(
    world: World, change: str, message: str
) -> None:
    signer = world.signers["police-a"]
    draft = world.body("police-a", payload={"rationale": RATIONALE})
    good = Submission.signed(draft, signer)
    texts: dict[str, NarrativeText] = dict(good.narrative)
    body = good.body
    if change == "v1-plain":
        body = draft
        texts = {}
    elif change == "v2-plain":
        body = {**good.body, "payload": {**good.body["payload"], "rationale": RATIONALE}}
    elif change == "text-missing":
        texts = {}
    elif change == "text-altered":
        texts = {"rationale": NarrativeText(RATIONALE + " ", texts["rationale"].salt)}
    else:
        body = {k: v for k, v in good.body.items() if k != "narrative"}
    before = _events(world)
    with pytest.raises(ValidationError, match=message):
        world.ledger.append(Submission(body, signer.sign_body(_canonical(body)), texts))
    assert _events(world) == before
    assert _raw_exec(world, "SELECT COUNT(*) FROM ledger_narrative", ())[0][0] == 0


def _canonical(body: dict[str, Any]) -> bytes:
    from ledger.canonical import canonical

    return canonical(body)


def test_a_retry_of_the_same_draft_is_the_same_event(world: World) -> None:
    first = _append(world, rationale=RATIONALE)
    world.counter -= 1  # the same event id again
    again = _append(world, rationale=RATIONALE)
    assert again.duplicate and again.event_hash == first.event_hash
    world.counter -= 1
    with pytest.raises(Conflict, match="different body"):
        _append(world, rationale=RATIONALE + " (edited)")


def test_tampered_sealed_narrative_is_named_by_its_tag(world: World) -> None:
    _append(world, rationale=RATIONALE)
    envs = world.ledger.case_envelopes("C-1")
    sealed = bytes(_raw_exec(world, "SELECT sealed FROM ledger_narrative", ())[0][0])
    flipped = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
    _raw_exec(world, "UPDATE ledger_narrative SET sealed = ?", (flipped,))
    with pytest.raises(
        IntegrityError, match=rf"case C-1 event {envs[-1].event_id}: .*narrative.rationale"
    ):
        world.ledger.vault().narrative_view("C-1", envs, "full")


def test_narrative_moved_between_events_is_caught(world: World) -> None:
    _append(world, rationale="first rationale")
    _append(world, rationale="second rationale")
    envs = world.ledger.case_envelopes("C-1")
    rows = _raw_exec(world, "SELECT event_id, sealed FROM ledger_narrative ORDER BY event_id", ())
    _raw_exec(
        world, "UPDATE ledger_narrative SET sealed = ? WHERE event_id = ?", (rows[1][1], rows[0][0])
    )
    with pytest.raises(IntegrityError, match="tag does not verify"):
        world.ledger.vault().narrative_view("C-1", envs, "full")


def test_a_wrong_master_key_writes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _append(world, rationale=RATIONALE)  # the vault now exists, sealed with the real key
    from ledger.core import Ledger

    monkeypatch.setenv("LEDGER_MASTER_KEY", base64.b64encode(b"\x07" * 32).decode())
    other = Ledger.open(world.url, world.keys)
    try:
        before = _events(world)
        draft = world.body("police-a", payload={"rationale": "another"})
        with pytest.raises(KeyFileError, match="wrong master key"):
            other.append(Submission.signed(draft, world.signers["police-a"]))
        assert _events(world) == before
    finally:
        other.close()


def test_erasing_a_cases_narrative_keeps_every_proof(world: World) -> None:
    _append(world, rationale=RATIONALE)
    world.ledger.checkpoint()
    vault = world.ledger.vault()
    vault.hold("C-1", "IICSA moratorium")
    with pytest.raises(Conflict, match="legal hold"):
        vault.erase_narrative("C-1", "retention ended")
    vault.hold("C-1", "", on=False)
    vault.erase_narrative("C-1", "retention ended")
    envs = world.ledger.case_envelopes("C-1")
    assert vault.narrative_view("C-1", envs, "full") == {envs[-1].event_id: {"rationale": ERASED}}
    assert _raw_exec(world, "SELECT sealed FROM ledger_narrative", ()) == [(None,)]
    assert _raw_exec(world, "SELECT wrapped_key FROM vault_case_keys", ()) == [(None,)]
    assert b"Larkspur" not in raw_bytes(world)
    r = replay_case(world.ledger, "C-1", load_policy(), view="full")
    assert r.chronology[-1]["action"] == ERASED
    erased = [e for e in world.ledger.stream_envelopes("ledger") if e.type == "NARRATIVE_ERASED"]
    assert erased[0].body["payload"] == {"case_ref": "C-1", "reason": "retention ended"}
    world.ledger.checkpoint()
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems
    with pytest.raises(Conflict, match="was erased"):
        _append(world, rationale="more")
    with pytest.raises(Conflict, match="already erased"):
        vault.erase_narrative("C-1", "again")


def test_wire_form_and_masking_rules() -> None:
    body, texts = seal_body({"event_id": "e1", "payload": {"rationale": "x", "summary": None}})
    assert body["v"] == 2 and set(body["narrative"]) == {"rationale"}
    salt = texts["rationale"].salt
    assert body["narrative"]["rationale"] == narrative_commitment("rationale", "x", salt)
    wire = {"rationale": {"text": "x", "salt": base64.b64encode(salt).decode()}}
    assert from_wire("e1", wire) == texts
    for bad, msg in (
        ({"notes": {"text": "x", "salt": wire["rationale"]["salt"]}}, "not a narrative field"),
        ({"rationale": {"text": "x", "salt": "short"}}, "32 bytes"),
        ({"rationale": {"text": "x"}}, "'text' and 'salt'"),
        ("text", "must be an object"),
    ):
        with pytest.raises(ValidationError, match=msg):
            from_wire("e1", bad)
    masked = mask(
        "Met Ann Lee on 03/03/2024 at SW1A 1AA, ann@example.org", {("Ann", False): "[p1]"}
    )
    assert masked == "Met [p1] Lee on [masked] at [masked], [masked]"
    for born in ("29 Feb 2008", "29th February 2008", "February 29, 2008", "2008-02-29"):
        assert mask(f"born {born}.", {}) == "born [masked].", born
    assert mask("Seen in May 2024 for 12 months", {}) == "Seen in May 2024 for 12 months"


def test_verify_vault_opens_everything_and_names_what_was_altered_or_lost(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main
    from ledger.vault import MISSING

    argv = ["verify", "--vault", "--db", world.url, "--keys", str(world.keys)]
    ref = world.ledger.vault().add(NAME, "2008-02-29")
    _append(world, child_ref=ref, rationale="first rationale")
    _append(world, case_id="C-2", summary="second summary")
    assert main(argv) == 0
    assert "vault: 3 sealed items opened and checked" in capsys.readouterr().out
    checks = [e for e in world.ledger.access_log("C-1") if "vault check" in str(e.body)]
    assert len(checks) == 1  # opening is on the access log too
    second = world.ledger.case_envelopes("C-2")[-1].event_id
    _raw_exec(world, "DELETE FROM ledger_narrative WHERE case_id = ?", ("C-2",))
    sealed = bytes(_raw_exec(world, "SELECT ciphertext FROM vault_subjects", ())[0][0])
    _raw_exec(world, "UPDATE vault_subjects SET ciphertext = ?", (sealed[:-1] + b"\0",))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"case C-2 event {second}: narrative.summary is committed in the chain but " in err
    assert f"subject {ref}: the sealed data or its key was altered" in err
    envs = world.ledger.case_envelopes("C-2")
    assert world.ledger.vault().narrative_view("C-2", envs, "full") == {
        second: {"summary": MISSING}
    }


def test_an_erasure_elsewhere_ends_cached_narrative_here(world: World) -> None:
    from ledger.core import Ledger

    _append(world, rationale=RATIONALE)
    envs = world.ledger.case_envelopes("C-1")
    here = world.ledger.vault()
    assert here.narrative_view("C-1", envs, "full")[envs[-1].event_id] == {"rationale": RATIONALE}
    elsewhere = Ledger.open(world.url, world.keys)  # another API process, say
    try:
        elsewhere.vault().erase_narrative("C-1", "retention ended")
    finally:
        elsewhere.close()
    assert here.narrative_view("C-1", envs, "full")[envs[-1].event_id] == {"rationale": ERASED}


def test_narrative_for_a_case_erased_by_another_process_is_refused(world: World) -> None:
    from ledger.core import Ledger
    from ledger.errors import NarrativeErased

    _append(world, rationale="first")  # this process now holds the case key
    elsewhere = Ledger.open(world.url, world.keys)
    try:
        elsewhere.vault().erase_narrative("C-1", "retention ended")
    finally:
        elsewhere.close()
    before = _events(world)
    with pytest.raises(NarrativeErased, match="was erased"):
        _append(world, rationale="second")
    assert _events(world) == before
    assert _raw_exec(
        world, "SELECT COUNT(*) FROM ledger_narrative WHERE sealed IS NOT NULL", ()
    ) == [(0,)]
    assert "C-1" not in world.ledger.vault()._case_keys  # the shredded key is dropped here too


def test_forged_or_repeated_submissions_never_touch_the_vault(world: World) -> None:
    from ledger.errors import SignatureError

    draft = world.body("police-a", "NEVER-EXISTED", payload={"rationale": "text"})
    good = Submission.signed(draft, world.signers["police-a"])
    forged = Submission(good.body, b"\0" * 64, good.narrative)
    world.ledger.vault()  # the vault's tables exist, so their staying empty means something
    with pytest.raises(SignatureError):
        world.ledger.append(forged)
    rows = _raw_exec(
        world, "SELECT COUNT(*) FROM vault_case_keys WHERE case_id = 'NEVER-EXISTED'", ()
    )
    assert rows == [(0,)]
    first = world.ledger.append(good)
    world.ledger.vault().erase_narrative("NEVER-EXISTED", "retention")
    again = world.ledger.append(good)  # a retry after erasure: the original receipt
    assert again.duplicate and again.event_hash == first.event_hash


def test_a_reused_event_id_makes_no_narrative_key_for_a_new_case(world: World) -> None:
    """A case's first narrative key is written before its events; a submission that
    reuses a recorded event id with another body, for a case with no key yet, is a
    conflict and leaves no key behind."""
    from ledger.errors import Conflict

    first = world.ledger.append(
        Submission.signed(
            world.body("police-a", "C-1", payload={"rationale": "first"}),
            world.signers["police-a"],
        )
    )
    reused = world.body("police-a", "NEW-CASE", payload={"rationale": "other"})
    reused["event_id"] = first.event_id
    with pytest.raises(Conflict, match="already recorded"):
        world.ledger.append(Submission.signed(reused, world.signers["police-a"]))
    rows = _raw_exec(world, "SELECT COUNT(*) FROM vault_case_keys WHERE case_id = 'NEW-CASE'", ())
    assert rows == [(0,)]


def test_verify_vault_names_a_key_removed_without_a_recorded_erasure(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main

    argv = ["verify", "--vault", "--db", world.url, "--keys", str(world.keys)]
    _append(world, rationale="first")
    _raw_exec(world, "UPDATE vault_case_keys SET wrapped_key = NULL", ())
    assert main(argv) == 1
    assert "case C-1: the narrative key is gone but no NARRATIVE_ERASED" in capsys.readouterr().err
    # An erasure that stopped before it was recorded is completed by running it again.
    _raw_exec(world, "UPDATE vault_case_keys SET erased_at = '2026-11-25T00:00:00.000000Z'", ())
    world.ledger.vault().forget("C-1")
    world.ledger.vault().erase_narrative("C-1", "retention")
    assert main(argv) == 0
    assert "vault: 0 sealed items opened" in capsys.readouterr().out


def test_erasing_a_person_destroys_the_narrative_that_names_them(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main

    vault = world.ledger.vault()
    ref = vault.add(NAME, "2008-02-29", "4 Orchard Close, SE11 4QQ")
    _append(world, child_ref=ref, rationale="Quintrell said she was scared.")
    _append(world, rationale="Called the school; no answer.")
    envs = world.ledger.case_envelopes("C-1")
    naming, other = envs[-2].event_id, envs[-1].event_id
    assert (
        "Quintrell" not in vault.narrative_view("C-1", envs, "panel", "p", "r")[naming]["rationale"]
    )
    vault.erase(ref, "retention ended")
    for view in ("full", "panel"):
        shown = vault.narrative_view("C-1", envs, view, "p", "r")
        assert shown[naming] == {"rationale": ERASED}
        assert shown[other] == {"rationale": "Called the school; no answer."}
    assert b"Quintrell" not in raw_bytes(world)
    argv = ["verify", "--vault", "--db", world.url, "--keys", str(world.keys)]
    assert main(argv) == 0
    assert "vault: 1 sealed items opened" in capsys.readouterr().out


def test_a_panel_sees_text_from_before_version_2_masked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger.events

    ref = world.ledger.vault().add(NAME, "2008-02-29")
    monkeypatch.setattr(ledger.events, "_check_narrative", lambda body, where: None)
    world.append("police-a", payload={"child_ref": ref, "rationale": f"Saw {NAME} at SE11 4QQ."})
    monkeypatch.undo()
    envs = world.ledger.case_envelopes("C-1")
    assert envs[-1].body["v"] == 1  # written as a version 1 ledger would have
    panel = world.ledger.vault().narrative_view("C-1", envs, "panel", "p", "r")
    assert panel == {envs[-1].event_id: {"rationale": f"Saw [{ref}] at [masked]."}}
    r = replay_case(world.ledger, "C-1", load_policy(), view="panel", reader="p")
    assert r.chronology[-1]["action"] == f"Saw [{ref}] at [masked]."


def test_import_keeps_narrative_and_refuses_bad_text(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main
    from ledger.client import LedgerClient

    argv = ["--db", world.url, "--keys", str(world.keys)]
    client = LedgerClient("http://unused", "unused", world.signers["police-a"])
    record = client.signed({**world.body("police-a"), "payload": {"rationale": "Seen at home"}})
    client.close()
    path = tmp_path / "in.jsonl"
    # An unsigned line whose body already commits to its text: signed here, text kept.
    path.write_text(json.dumps({"body": record["body"], "narrative": record["narrative"]}) + "\n")
    assert main(["import", str(path), "--sign", *argv]) == 0
    envs = world.ledger.case_envelopes("C-1")
    assert world.ledger.vault().narrative_view("C-1", envs, "full") == {
        envs[-1].event_id: {"rationale": "Seen at home"}
    }
    capsys.readouterr()
    before = _events(world)
    for line, needle in (
        ({"body": {**record["body"], "event_id": "x-1"}}, "its text was not sent"),
        (
            {"body": {**world.body("police-a"), "payload": {"rationale": "\ud800"}}},
            "not valid Unicode",
        ),
        ({"body": {**world.body("police-a"), "payload": ["x"]}}, "payload must be an object"),
        (
            {
                "body": {**record["body"], "event_id": "x-2", "payload": ["x"]},
                "narrative": record["narrative"],
            },
            "payload must be an object",
        ),
    ):
        path.write_text(json.dumps(line) + "\n")
        assert main(["import", str(path), "--sign", *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert _events(world) == before


def test_erasing_a_person_keeps_texts_that_only_share_words_with_their_name(world: World) -> None:
    vault = world.ledger.vault()
    ref = vault.add("Will Young", "2009-05-01")
    kept = [
        "Officers will attend; the young people were not home.",
        "Strategy meeting will be held.",
        "Will said he would come back.",  # a first name alone does not destroy a text
    ]
    for text in kept:
        _append(world, child_ref=ref, rationale=text)
    _append(world, child_ref=ref, rationale="Young was seen at the station.")
    envs = world.ledger.case_envelopes("C-1")
    panel = vault.narrative_view("C-1", envs, "panel", "p", "r")
    assert panel[envs[-2].event_id]["rationale"] == f"[{ref}] said he would come back."
    assert panel[envs[-4].event_id]["rationale"] == kept[0]  # lower-case words stay
    vault.erase(ref, "retention ended")
    full = vault.narrative_view("C-1", envs, "full")
    assert [full[e.event_id]["rationale"] for e in envs[-4:]] == [*kept, ERASED]


def test_an_erasure_stopped_before_it_was_recorded_is_recorded_despite_a_later_hold(
    world: World,
) -> None:
    vault = world.ledger.vault()
    ref = vault.add(NAME, "2008-02-29")
    _raw_exec(
        world,
        "UPDATE vault_subjects SET wrapped_key = NULL, ciphertext = NULL, "
        "erased_at = '2026-11-25T00:00:00.000000Z' WHERE ref = ?",
        (ref,),
    )
    vault.hold(ref, "inquiry")
    vault.erase(ref, "retention ended")  # the data is gone already: only the record is added
    assert [e.type for e in world.ledger.stream_envelopes("ledger")][-1] == "SUBJECT_ERASED"
    with pytest.raises(Conflict, match="already erased"):
        vault.erase(ref, "again")


def test_a_dry_run_lists_what_erasing_a_person_would_destroy_and_keep(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main

    vault = world.ledger.vault()
    ref = vault.add(NAME, "2008-02-29")
    _append(world, child_ref=ref, rationale=f"{NAME} was seen.")
    _append(world, child_ref=ref, rationale="Zelda said she was scared.")
    _append(world, child_ref=ref, rationale="No answer at the door.")
    envs = world.ledger.case_envelopes("C-1")
    named, first_name = envs[-3].event_id, envs[-2].event_id
    argv = ["subject", "erase", ref, "--reason", "retention", "--db", world.url]
    argv += ["--keys", str(world.keys)]
    assert main([*argv, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [t["event_id"] for t in plan["destroyed"]] == [named]
    assert [t["event_id"] for t in plan["kept"]] == [first_name]
    assert plan["erased"] is False
    assert vault.view(ref, "full", "op", "check")["name"] == NAME  # nothing changed
    assert vault.narrative_view("C-1", envs, "full")[named] == {"rationale": f"{NAME} was seen."}
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"destroy C-1 {named} rationale" in out and f"keep C-1 {first_name} rationale" in out
    assert vault.narrative_view("C-1", envs, "full")[named] == {"rationale": ERASED}


def test_bundles_made_before_and_after_erasure_verify_offline(world: World) -> None:
    from ledger.bundle import export_bundle
    from ledger.verify import verify_bundle

    vault = world.ledger.vault()
    ref = vault.add(NAME, "2008-02-29")
    _append(world, child_ref=ref, rationale=f"{NAME} was seen.")
    _append(world, child_ref=ref, summary="Home visit")
    world.ledger.checkpoint()
    key = world.ledger.log_verifier().encode()
    before = json.loads(json.dumps(export_bundle(world.ledger, "C-1")))
    vault.erase(ref, "retention ended")
    vault.erase_narrative("C-1", "retention ended")
    world.ledger.checkpoint()
    after = json.loads(json.dumps(export_bundle(world.ledger, "C-1")))
    for bundle in (before, after):
        report = verify_bundle(bundle, key)
        assert report.case_id == "C-1" and report.events == 2
    assert NAME not in json.dumps(after) and "Home visit" not in json.dumps(after)


def test_a_bad_signature_late_in_a_batch_rolls_back_what_was_inserted(world: World) -> None:
    """On SQLite, once a case's key is held, a batch's events are inserted while its
    signatures are still being checked: one that fails must leave no event, index
    row or narrative behind, and the batch must go through whole once it is mended.
    (PostgreSQL checks them before it takes the shared write lock.)"""
    from dataclasses import replace

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.errors import SignatureError
    from ledger.keys import Signer

    _append(world, rationale="first")  # C-1's key is made and held
    signer = world.signers["police-a"]
    batch = [
        Submission.signed(world.body("police-a", payload={"rationale": f"note {n}"}), signer)
        for n in range(40)
    ]
    stranger = Signer(Ed25519PrivateKey.generate())

    def counts() -> list[int]:
        return [
            _events(world),
            *(
                _raw_exec(world, f"SELECT COUNT(*) FROM {table}", ())[0][0]
                for table in ("ledger_narrative", "ledger_event_index")
            ),
        ]

    before = counts()
    for bad in (37, 5):  # a wrong key late in the batch, then early
        forged = replace(batch[bad], sig=stranger.sign_body(batch[bad].body_bytes or b""))
        with pytest.raises(SignatureError, match=batch[bad].body["event_id"]):
            world.ledger.append_many([*batch[:bad], forged, *batch[bad + 1 :]])
        assert counts() == before
    receipts = world.ledger.append_many(batch)
    assert [r.seq for r in receipts] == list(range(2, 42))
    assert counts() == [n + 40 for n in before]
    assert world.ledger.vault().narrative_view(
        "C-1", world.ledger.case_envelopes("C-1")[-1:], "full"
    ) == {batch[-1].body["event_id"]: {"rationale": "note 39"}}
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems
