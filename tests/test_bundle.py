"""Evidence bundles: exported from either store, verified offline with only the log key."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def test_a_bundle_judges_keys_by_log_order_too(world: World) -> None:
    """An event written behind the ledger's back with a revoked key, its recorded_at
    back-dated, then integrated: the offline verifier sees, from leaf indexes, that
    it came after the revocation."""
    from tests.test_tamper import forge_with_revoked_key

    forged = forge_with_revoked_key(world, backdated=True)
    world.ledger.checkpoint()
    bundle = export_bundle(world.ledger, "C-1")
    with pytest.raises(FormatError, match=f"event {forged}.*after the key's revocation"):
        verify_bundle(json.loads(json.dumps(bundle)), world.ledger.log_verifier().encode())


@pytest.mark.parametrize(
    "attack",
    ["edit-byte", "drop-event", "wrong-key", "other-checkpoint", "drop-genesis", "bad-proof"],
)
def test_tampered_bundle_fails(world: World, attack: str) -> None:
    bundle, key = bundle_for(world)
    bad = copy.deepcopy(bundle)
    case_entries = [e for e in bad["entries"] if e["stream"] == "case/C-1"]
    if attack == "edit-byte":
        raw = base64.b64decode(case_entries[1]["bytes"]).replace(b"CHILD_SEEN", b"CHILD_SEEM")
        case_entries[1]["bytes"] = base64.b64encode(raw).decode()
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


def test_verify_module_runs_alone_with_only_cryptography(world: World, tmp_path: Path) -> None:
    """ledger/verify.py copied on its own beside nothing but `cryptography`: no site-packages,
    no rest of the project, still verifies a bundle."""
    import cryptography

    bundle, key = bundle_for(world)
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    site = Path(cryptography.__file__).parent.parent
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "cryptography").symlink_to(site / "cryptography")
    for backend in site.glob("_cffi_backend*"):
        (lib / backend.name).symlink_to(backend)
    alone = tmp_path / "alone"
    alone.mkdir()
    verifier = alone / "verify.py"
    verifier.write_bytes((Path(__file__).parent.parent / "ledger" / "verify.py").read_bytes())
    env = {"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"}
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import ledger"],
        env=env,
        cwd=alone,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0  # the rest of the project really is out of reach
    ok = subprocess.run(
        [sys.executable, "-S", str(verifier), str(path), "--log-key", key],
        env=env,
        cwd=alone,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: case C-1" in ok.stdout
    bundle["entries"][-1]["bytes"] = base64.b64encode(b"{}").decode()
    path.write_text(json.dumps(bundle))
    bad = subprocess.run(
        [sys.executable, "-S", str(verifier), str(path), "--log-key", key],
        env=env,
        cwd=alone,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("FAIL: entry")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_byte_change_in_a_bundle_fails(world: World, data: st.DataObject) -> None:
    if not hasattr(world, "bundle"):
        world.bundle = bundle_for(world)  # type: ignore[attr-defined]
    bundle, key = world.bundle  # type: ignore[attr-defined]
    text = json.dumps(bundle).encode()
    position = data.draw(st.integers(0, len(text) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != text[position]))
    changed = text[:position] + bytes([value]) + text[position + 1 :]
    try:
        candidate = json.loads(changed)
    except (ValueError, UnicodeDecodeError):
        return  # not even JSON: the CLI refuses it as a malformed file
    if candidate == bundle:
        return  # a change JSON does not see (say, in insignificant formatting)
    with pytest.raises(FormatError):
        verify_bundle(candidate, key)
