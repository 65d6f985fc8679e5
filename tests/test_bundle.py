"""Evidence bundles: exported from either store, verified offline with only the log key."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger.bundle import export_bundle
from ledger.checkpoint import NoteVerifier
from ledger.verify import FormatError, verify_bundle
from tests.conftest import World


def bundle_for(world: World) -> tuple[dict[str, Any], str]:
    world.append("police-a", event_type="DISCLOSURE_RECEIVED")
    world.append("csc-b", case_id="OTHER")
    world.append("csc-b")
    world.append("police-a")
    return export_bundle(world.ledger, "C-1"), world.ledger.log_verifier().encode()


def test_bundle_verifies_offline(world: World) -> None:
    bundle, key = bundle_for(world)
    report = verify_bundle(json.loads(json.dumps(bundle)), key)
    assert (report.case_id, report.events) == ("C-1", 3)
    streams = {e["stream"] for e in bundle["entries"]}
    assert streams == {"ledger", "agency/police-a", "agency/csc-b", "case/C-1"}


@pytest.mark.parametrize(
    "attack",
    ["edit-byte", "drop-event", "wrong-key", "other-checkpoint", "drop-genesis", "bad-proof"],
)
def test_tampered_bundle_fails(world: World, attack: str) -> None:
    bundle, key = bundle_for(world)
    bad = copy.deepcopy(bundle)
    case_entries = [e for e in bad["entries"] if e["stream"] == "case/C-1"]
    if attack == "edit-byte":
        case_entries[1]["envelope"] = case_entries[1]["envelope"].replace(
            "CHILD_SEEN", "CHILD_SEEM"
        )
    elif attack == "drop-event":
        bad["entries"].remove(case_entries[1])
    elif attack == "wrong-key":
        other = NoteVerifier.parse(key)
        key = NoteVerifier(other.name, other.alg, bytes(32 - 1) + b"\x01").encode()
    elif attack == "other-checkpoint":
        world.append("csc-b")
        bad["checkpoint"] = world.ledger.checkpoint()
    elif attack == "drop-genesis":
        bad["entries"] = [e for e in bad["entries"] if e["stream"] != "ledger"]
    else:
        h = case_entries[0]["inclusion"][0]
        case_entries[0]["inclusion"][0] = ("A" if h[0] != "A" else "B") + h[1:]
    with pytest.raises(FormatError):
        verify_bundle(bad, key)


def test_verify_module_needs_only_stdlib_and_cryptography(world: World, tmp_path: Path) -> None:
    bundle, key = bundle_for(world)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['ledger.verify', sys.argv[1], '--log-key', sys.argv[2]]\n"
        "try:\n    runpy.run_module('ledger.verify', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "third = sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'eventsourcing', "
        "'rfc8785', 'rich', 'yaml', 'psycopg', 'fastapi'})\n"
        "print('THIRD', third, 'CODE', code)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(path), key], capture_output=True, text=True, check=True
    ).stdout
    assert "OK: case C-1" in out
    assert "THIRD [] CODE 0" in out
