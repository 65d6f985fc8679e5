"""The command line as a user meets it: bad input gets one line, the right exit code,
and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.canonical import canonical
from ledger.cli import main
from ledger.core import Ledger
from ledger.verify import b64encode
from tests.conftest import World, bodies_checked


def count(world: World) -> int:
    return world.ledger.store.catalog.count_events()


def run(world: World, *argv: str) -> list[str]:
    return [*argv, "--db", world.url, "--keys", str(world.keys)]


PAYLOAD = ["append", "C-1", "--type", "CHILD_SEEN", "--agency", "police-a", "--payload"]


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
        (
            [*PAYLOAD, '{"n": ' + "1" * 5000 + "}"],
            2,
            "--payload is not usable JSON: Exceeds the limit",
        ),
        (
            [*PAYLOAD, "[" * 100_000],
            2,
            "--payload is not usable JSON: it nests too deeply",
        ),
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
    assert main(["cases", "--db", "postgresql://postgres@127.0.0.1/test?schema="]) == 2
    assert "bad schema name ''" in capsys.readouterr().err


def test_a_verb_on_an_uninitialised_postgres_schema_creates_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import secrets

    import psycopg

    from tests.conftest import PG_URL

    schema = f"absent_{secrets.token_hex(4)}"
    assert main(["cases", "--db", f"{PG_URL}?schema={schema}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run 'ledger init' first" in err
    with psycopg.connect(PG_URL, autocommit=True) as c:
        found = c.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [schema]
        ).fetchone()
    assert found is None


def test_unreachable_postgres_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "--db", "postgresql://postgres@127.0.0.1:1/test"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1/test" in err


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"body": {"n": ' + "1" * 5000 + "}}", "line 1 is not usable JSON: Exceeds the limit"),
        ("[" * 100_000, "line 1 is not usable JSON: it nests too deeply"),
    ],
)
def test_import_of_json_beyond_pythons_limits_is_one_line(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, needle: str
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(line + "\n")
    before = count(world)
    assert main(run(world, "import", str(path), "--sign")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert count(world) == before


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


@pytest.mark.parametrize("fault", ["dangling", "forward", "other_case", "bad_sig", "not_utf8"])
def test_import_refuses_a_late_bad_line_before_writing_any_batch(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    """Faults only the whole file shows (references, signatures) are found before the
    first of several batches is saved, not after some were."""
    signer = world.signers["police-a"]
    lines = []
    for n in range(1, 8):
        body = world.body("police-a", event_id=f"imp-{n}")
        if n > 1:
            body["responds_to"] = [f"imp-{n - 1}"]
        lines.append(body)
    last = lines[-1]
    if fault == "dangling":
        last["responds_to"] = ["never-recorded"]
    elif fault == "forward":
        lines[3]["responds_to"] = ["imp-6"]
    elif fault == "other_case":
        lines[5] = {**lines[5], "case_id": "C-other", "responds_to": []}
    records = [{"body": b, "sig": b64encode(signer.sign_body(canonical(b)))} for b in lines]
    if fault == "bad_sig":
        records[-1]["sig"] = records[0]["sig"]
    path = tmp_path / "in.jsonl"
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(data + (b'{"body": "\xff"}\n' if fault == "not_utf8" else b""))
    before = count(world)
    assert main(run(world, "import", str(path), "--batch", "2")) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert ("not UTF-8" in err) if fault == "not_utf8" else (" line " in err)
    assert count(world) == before


def signed_lines(world: World, n: int) -> list[dict[str, object]]:
    signer = world.signers["police-a"]
    bodies = [world.body("police-a", event_id=f"imp-{k}") for k in range(n)]
    return [{"body": b, "sig": b64encode(signer.sign_body(canonical(b)))} for b in bodies]


def test_import_checks_each_signature_once(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vetting the file checks every signature; writing the same bytes does not check
    them again."""
    checked = bodies_checked(monkeypatch)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in signed_lines(world, 12)))
    before = count(world)
    assert main(run(world, "import", str(path), "--batch", "5")) == 0
    assert count(world) == before + 12
    assert len(checked) == len(set(checked)) == 12
    assert world.ledger.verified_signatures is None  # remembered only for the import


def test_import_checks_a_body_changed_after_vetting(world: World, tmp_path: Path) -> None:
    """The file rewritten between vetting and writing, a body back-dated under the same
    signature: the line is not the one checked, and nothing is written."""
    from ledger.errors import UsageError
    from ledger.importer import Importer

    lines = signed_lines(world, 3)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    importer = Importer(world.ledger, path, sign=False)
    before = count(world)
    with world.ledger.remembering_signatures():
        assert importer.check() == 3
        body = lines[2]["body"]
        assert isinstance(body, dict)
        body["occurred_at"] = "2024-03-02T14:05:00Z"  # back-dated, same signature
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
        with pytest.raises(UsageError, match="line 3 is not the line checked"):
            importer.run(10, lambda n: None)
    assert count(world) == before


@pytest.mark.parametrize(
    ("change", "batch", "written", "message"),
    [
        ("append", 10, 0, "line 4 is not the line checked"),
        ("append", 2, 2, r"line 4 is not .* \(after 2 events were recorded"),
        ("cut", 10, 0, "it was cut short"),
        ("swap", 1, 0, "line 1 is not the line checked"),
        ("same", 2, 3, None),
    ],
)
def test_import_writes_only_the_lines_it_checked(
    world: World, tmp_path: Path, change: str, batch: int, written: int, message: str | None
) -> None:
    """What was written is exactly what was checked: a line added, removed or moved
    after vetting stops the import before the batch holding it."""
    from ledger.errors import UsageError
    from ledger.importer import Importer

    lines = [json.dumps(r) + "\n" for r in signed_lines(world, 4)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(lines[:3]))
    importer = Importer(world.ledger, path, sign=False)
    before = count(world)
    assert importer.check() == 3
    changed = {
        "append": lines,  # a fourth line, itself valid, that nobody checked
        "cut": lines[:2],
        "swap": [lines[1], lines[0], lines[2]],
        "same": lines[:3],
    }[change]
    path.write_text("".join(changed))
    if message is None:
        assert importer.run(batch, lambda n: None) == (3, 0)
    else:
        with pytest.raises(UsageError, match=message):
            importer.run(batch, lambda n: None)
    assert count(world) == before + written


@pytest.mark.parametrize("checked", ["never", "refused"])
def test_import_writes_nothing_unchecked(world: World, tmp_path: Path, checked: str) -> None:
    """Not after a check that refused the file either: its last lines are checked
    only once the whole file has been read."""
    from ledger.errors import SignatureError
    from ledger.importer import Importer

    lines = signed_lines(world, 3)
    lines[2]["sig"] = lines[0]["sig"]  # the last line's signature is not its own
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    importer = Importer(world.ledger, path, sign=False)
    before = count(world)
    if checked == "refused":
        with pytest.raises(SignatureError, match="line 3"):
            importer.check()
    with pytest.raises(RuntimeError, match="check"):
        importer.run(1, lambda n: None)
    assert count(world) == before


@pytest.mark.parametrize(
    "extra",
    [
        ["../../escaped", "--kind", "police"],
        ["Bad_Id", "--kind", "police"],
        ["new-agency", "--kind", "police", "--name", "x" * 121],
        ["new-agency", "--kind", "sheriff"],
    ],
)
def test_agency_add_refused_writes_no_key_file(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    before = {p for p in tmp_path.rglob("*")}
    events = count(world)
    assert main(run(world, "agency", "add", *extra)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert {
        p for p in tmp_path.rglob("*") if not p.name.endswith(("-wal", "-shm", "-journal"))
    } <= before
    assert not (tmp_path.parent / "escaped.key").exists()
    assert count(world) == events


def test_what_the_machine_or_the_input_refuses_is_one_line(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(b"rules: \xff\xfe\n")
    init = ["init", "--db", f"sqlite:///{tmp_path}/o.sqlite", "--keys", str(tmp_path / "k3")]
    attempts = [
        ["init", "--db", f"sqlite:///{tmp_path}/n.sqlite", "--keys", str(blocker / "keys")],
        ["init", "--db", f"sqlite:///{blocker}/n.sqlite", "--keys", str(tmp_path / "k2")],
        run(world, "cases", "--policy", str(policy)),
        *([*init, "--origin", o] for o in ("log.example\nforged line", "log.example+x")),
        run(world, "log", "witness", "--state", str(tmp_path / "w"), "--log-key", "nonsense"),
        run(world, "log", "witness", "--state", str(blocker)),
        [
            "log",
            "witness",
            "--state",
            str(tmp_path / "w2"),
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "t",
        ],
    ]
    for argv in attempts:
        assert main(argv) in (1, 2), argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("ledger:"), (argv, err)


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


def test_the_command_loads_the_cli_only_when_run() -> None:
    """Spawned verify workers run the command's script again: it must not pull in the
    whole CLI (each worker would spend its start-up importing it)."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="ledger")
    assert script.value == "ledger.__main__:main"
    probe = "import sys, ledger.__main__; print(sorted(m for m in sys.modules if m in "
    probe += "('ledger.cli', 'ledger.core', 'ledger.events', 'pydantic', 'rich')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    help_text = subprocess.run(
        [sys.executable, "-m", "ledger", "--help"], capture_output=True, text=True, check=True
    )
    assert "verify" in help_text.stdout
