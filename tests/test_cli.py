"""The command line as a user meets it: bad input gets one line, the right exit code,
and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.cli import main
from ledger.core import Ledger
from tests.conftest import World


def count(world: World) -> int:
    return world.ledger.store.catalog.count_events()


def run(world: World, *argv: str) -> list[str]:
    return [*argv, "--db", world.url, "--keys", str(world.keys)]


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["append", "C-1", "--type", "TEA_MADE", "--agency", "police-a"], 1, "unknown event type"),
        (
            ["append", "C-1", "--type", "CHILD_SEEN", "--agency", "police-a", "--payload", "{nope"],
            2,
            "not valid JSON",
        ),
        (
            [
                "append",
                "C-1",
                "--type",
                "CHILD_SEEN",
                "--agency",
                "police-a",
                "--occurred-at",
                "3 March 2024",
            ],
            2,
            "not a UTC time",
        ),
        (
            ["append", "C-1", "--type", "CHILD_SEEN", "--agency", "nobody"],
            1,
            "unknown agency 'nobody'",
        ),
        (
            ["append", "C-1", "--type", "CHILD_SEEN", "--agency", "police-a", "--key", "/no/file"],
            1,
            "key file /no/file does not exist",
        ),
        (
            [
                "append",
                "C-1",
                "--type",
                "CASE_CLOSED",
                "--agency",
                "csc-b",
                "--payload",
                '{"reason": "RC0"}',
            ],
            1,
            "payload.reason",
        ),
        (["append", "C-1", "--agency", "police-a"], 2, "--type"),
    ],
)
def test_bad_append_input_is_one_line_and_writes_nothing(
    world: World, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str
) -> None:
    before = count(world)
    assert main(run(world, *argv)) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err
    assert count(world) == before


def test_append_and_replay_round_trip(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            run(
                world,
                "append",
                "C-7",
                "--type",
                "MISSING_REPORTED",
                "--agency",
                "police-a",
                "--occurred-at",
                "2024-05-04T21:30:00Z",
                "--json",
            )
        )
        == 0
    )
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["case_id"] == "C-7" and receipt["seq"] == 1
    assert main(run(world, "replay", "C-7", "--format", "json")) == 0
    rows = json.loads(capsys.readouterr().out)["chronology"]
    assert [r["type"] for r in rows] == ["MISSING_REPORTED"]
    assert main(run(world, "cases", "--json")) == 0
    cases = json.loads(capsys.readouterr().out)
    assert cases[0]["case_id"] == "C-7" and cases[0]["boroughs"] == ["Lambeth"]


def test_malformed_db_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "--db", "sqlite:/x"]) == 2
    assert "malformed SQLite URL" in capsys.readouterr().err
    assert main(["cases", "--db", "mysql://x/y"]) == 2


def test_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "--db", "postgresql://postgres@127.0.0.1:1/test"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/test" in err


def test_import_refuses_a_bad_file_before_writing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = world.body("police-a")
    bad = {**world.body("police-a"), "type": "NOT_A_TYPE"}
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"body": good}) + "\n" + json.dumps({"body": bad}) + "\n")
    before = count(world)
    assert main(run(world, "import", str(path), "--sign")) == 1
    assert "line 2" in capsys.readouterr().err
    assert count(world) == before
    path.write_text(json.dumps({"body": good}) + "\n")
    assert main(run(world, "import", str(path), "--sign", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {"appended": 1, "duplicates": 0}
    assert main(run(world, "import", str(path), "--sign", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {"appended": 0, "duplicates": 1}


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "ledger"
    proc = subprocess.run(
        [str(exe), "replay", "NOPE", "--db", f"sqlite:///{tmp_path}/x.sqlite"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("ledger: no ledger database at ")
    assert not (tmp_path / "x.sqlite").exists()


def test_demo_is_deterministic_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--db", f"sqlite:///{tmp_path}/d.sqlite", "--keys", str(tmp_path / "k")]
    assert main(["demo", "--json", *argv]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cases"] >= 6 and first["agencies"] >= 4 and first["new_events"] == first["events"]
    assert main(["demo", "--json", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["new_events"] == 0
    assert main(["verify", *argv]) == 0
    ledger = Ledger.open(argv[1], Path(argv[3]))
    try:
        cases = ledger.cases()
        boroughs = {b for c in cases for b in c["boroughs"]}
        assert {"Lambeth", "Southwark", "Croydon"} <= boroughs
        rape = [e for e in ledger.case_envelopes("DEMO-LAM-0001")]
        assert rape[0].type == "DISCLOSURE_RECEIVED"
        assert "CRIME_RECORDED" not in {e.type for e in rape}
        swk = ledger.case_envelopes("DEMO-SWK-0002")
        assert not any(b"seeking out older men" in e.raw for e in swk)  # sealed, not chained
        texts = ledger.vault().narrative_view("DEMO-SWK-0002", swk, "full")
        assert any("seeking out older men" in f.get("rationale", "") for f in texts.values())
    finally:
        ledger.close()


def test_log_verbs_print_proofs_that_verify(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    import base64

    from ledger.checkpoint import NoteVerifier, verify_checkpoint
    from ledger.merkle import verify_consistency, verify_inclusion

    first = world.append("police-a")
    assert main(run(world, "log", "checkpoint")) == 0
    old_note = capsys.readouterr().out
    world.append("csc-b")
    assert main(run(world, "log", "checkpoint")) == 0
    note = capsys.readouterr().out
    assert main(run(world, "log", "key")) == 0
    key = NoteVerifier.parse(capsys.readouterr().out.strip())
    old, new = verify_checkpoint(old_note, key), verify_checkpoint(note, key)
    assert main(run(world, "log", "inclusion", "--event-hash", first.event_hash)) == 0
    p = json.loads(capsys.readouterr().out)
    verify_inclusion(
        p["leaf_index"],
        p["tree_size"],
        base64.b64decode(p["leaf_hash"]),
        [base64.b64decode(h) for h in p["proof"]],
        new.root,
    )
    assert (
        main(run(world, "log", "consistency", "--first", str(old.size), "--second", str(new.size)))
        == 0
    )
    c = json.loads(capsys.readouterr().out)
    verify_consistency(
        old.size, new.size, [base64.b64decode(h) for h in c["proof"]], old.root, new.root
    )
    assert main(run(world, "log", "inclusion", "--index", "0", "--event-hash", "x")) == 2
    assert main(run(world, "log", "consistency", "--first", "0", "--second", "1")) == 2
    assert main(run(world, "log", "inclusion", "--index", "999")) == 2


def test_narrative_from_the_command_line(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "Met at 4 Orchard Close, SE11 4QQ; she is streetwise."
    payload = json.dumps({"rationale": secret})
    argv = ["append", "C-9", "--type", "CHILD_SEEN", "--agency", "police-a", "--payload", payload]
    assert main(run(world, *argv, "--occurred-at", "2024-05-04T21:30:00Z", "--json")) == 0
    capsys.readouterr()
    assert b"Orchard" not in world.ledger.case_envelopes("C-9")[0].raw
    assert main(run(world, "replay", "C-9", "--format", "json")) == 0
    assert json.loads(capsys.readouterr().out)["chronology"][0]["action"] == secret
    assert main(run(world, "replay", "C-9", "--format", "json", "--redact", "panel")) == 0
    masked = json.loads(capsys.readouterr().out)["chronology"][0]["action"]
    assert "Orchard" not in masked and "SE11" not in masked and "streetwise" in masked

    # Signed elsewhere: the JSONL record carries the texts beside the body.
    from ledger.client import LedgerClient

    client = LedgerClient("http://unused", "unused", world.signers["police-a"])
    record = client.signed({**world.body("police-a", "C-9"), "payload": {"summary": "Home visit"}})
    client.close()
    path = tmp_path / "signed.jsonl"
    path.write_text(json.dumps({k: record[k] for k in ("body", "sig")}) + "\n")
    before = count(world)
    assert main(run(world, "import", str(path))) == 1
    assert "line 1" in capsys.readouterr().err and count(world) == before
    path.write_text(json.dumps(record) + "\n")
    assert main(run(world, "import", str(path), "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {"appended": 1, "duplicates": 0}

    assert main(run(world, "hold", "set", "C-9", "--reason", "inquiry")) == 0
    assert main(run(world, "narrative", "erase", "C-9", "--reason", "retention")) == 1
    assert "legal hold" in capsys.readouterr().err
    assert main(run(world, "hold", "clear", "C-9")) == 0
    assert main(run(world, "narrative", "erase", "C-9", "--reason", "retention")) == 0
    capsys.readouterr()
    assert main(run(world, "replay", "C-9", "--format", "json")) == 0
    rows = json.loads(capsys.readouterr().out)["chronology"]
    assert [r["action"] for r in rows] == ["", "[erased]"]  # in occurred order
    assert rows[0]["event"].endswith("[erased]")
    assert main(run(world, "narrative", "erase", "NOPE", "--reason", "x")) == 1
    assert "no case 'NOPE'" in capsys.readouterr().err
    assert main(run(world, "verify")) == 0
