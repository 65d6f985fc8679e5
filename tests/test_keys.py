"""Key files: created whole or not at all, 0600, never overwritten, and shared by
processes that start together on a ledger that has none yet."""

from __future__ import annotations

import base64
import errno
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ledger import files
from ledger.audit import audit
from ledger.errors import KeyFileError, StoreUnavailable
from ledger.keys import (
    create_private,
    load_key_file,
    load_or_generate_key_file,
)
from ledger.vault import _key_file
from tests.conftest import CHILD, World


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_new_key_file_is_private_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "a.key"
    assert create_private(path, lambda: b"secret\n") == b"secret\n"
    assert path.read_bytes() == b"secret\n"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert leftovers(path.parent) == []
    assert create_private(path, lambda: b"other\n") == b"secret\n"  # never written over
    assert path.read_bytes() == b"secret\n"
    assert leftovers(path.parent) == []


def test_creating_a_key_file_that_appeared_meanwhile_gives_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert create_private(path, lambda: b"first\n") == b"first\n"
    assert create_private(path, lambda: b"second\n") == b"first\n"
    assert path.read_bytes() == b"first\n"
    assert leftovers(tmp_path) == []


def test_a_vault_key_written_by_another_process_after_the_check_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment of the race: this process found no key file, another then wrote one.
    This process must take that key, not fail and not make a second one."""
    path = tmp_path / "master.key"
    theirs = bytes(range(32))
    create_private(path, lambda: base64.b64encode(theirs) + b"\n")  # the other process
    monkeypatch.delenv("LEDGER_MASTER_KEY", raising=False)
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if p == path else real_exists(p))
    assert _key_file(path, "LEDGER_MASTER_KEY") == theirs
    assert base64.b64decode(path.read_bytes()) == theirs


def test_a_ledger_key_written_meanwhile_is_loaded_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    first = load_or_generate_key_file(path)
    assert load_or_generate_key_file(path).public_bytes == first.public_bytes
    assert load_key_file(path).public_bytes == first.public_bytes


def test_without_hard_links_the_key_file_is_still_created_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("ledger.files.os.link", no_links)
    path = tmp_path / "k.key"
    assert create_private(path, lambda: b"one\n") == b"one\n"
    assert create_private(path, lambda: b"two\n") == b"one\n"
    assert not files.create_once(path, b"two\n")  # the name taken: refused in place too
    assert mode_of(path) == 0o600
    assert leftovers(tmp_path) == []
    signer = load_or_generate_key_file(tmp_path / "ledger.key")
    assert load_key_file(tmp_path / "ledger.key").public_bytes == signer.public_bytes


OPENER = textwrap.dedent("""
    import base64, sys, time
    from pathlib import Path
    from ledger.keys import load_or_generate_key_file
    from ledger.vault import _key_file
    directory, start = Path(sys.argv[1]), float(sys.argv[2])
    while time.time() < start:
        pass
    master = _key_file(directory / "master.key", "LEDGER_MASTER_KEY")
    signer = load_or_generate_key_file(directory / "ledger.key")
    print(base64.b64encode(master).decode(), signer.key_id)
""")


def test_processes_starting_together_all_get_the_one_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_MASTER_KEY"}
    for attempt in range(3):
        directory = tmp_path / f"keys{attempt}"
        start = time.time() + 2.0  # every process imported and spinning by then
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(directory), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
        assert len({out for out, _ in outs}) == 1, outs
        assert mode_of(directory / "master.key") == 0o600
        assert leftovers(directory) == []


NARRATING_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ledger.core import Ledger, Submission
    from ledger.keys import load_key_file
    url, keys, agency, tag, start = sys.argv[1:6]
    ledger = Ledger.open(url, Path(keys), create=False)
    signer = load_key_file(ledger.agency_key_path(agency))
    subs = [Submission.signed({
        "v": 2, "case_id": f"N-{n % 3}", "event_id": f"{tag}-{n}",
        "type": "REFERRAL_DECISION", "occurred_at": "2024-04-19T16:45:00Z",
        "agency": agency, "actor": {"role": "team manager"},
        "payload": {"child_ref": sys.argv[6], "decision": "nfa",
                    "rationale": f"Screened by {tag}; no further action."},
        "responds_to": [], "corrects": None, "key_id": signer.key_id}, signer)
        for n in range(10)]
    while time.time() < float(start):
        pass
    for sub in subs:
        ledger.append(sub)
    ledger.close()
""")


def test_two_writers_sealing_the_first_narrative_at_once_both_succeed(world: World) -> None:
    """A ledger whose vault has no key yet, written to by two processes at once (a
    server's two workers, say): both create the vault's keys on their first sealed
    rationale, and both must go on with the same ones."""
    assert not (world.keys / "master.key").exists()
    start = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                NARRATING_WRITER,
                world.url,
                str(world.keys),
                agency,
                tag,
                str(start),
                CHILD,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for agency, tag in (("police-a", "p"), ("csc-b", "c"))
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert leftovers(world.keys) == []
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems
    assert report.events >= 20
    vault = world.ledger.vault()
    opened, problems = vault.check("test")
    assert (opened, problems) == (20, [])
    for case in ("N-0", "N-1", "N-2"):
        envelopes = world.ledger.case_envelopes(case)
        texts = vault.narrative_view(case, envelopes, "full")
        assert len(texts) == len(envelopes) > 0
        assert all("no further action" in t["rationale"] for t in texts.values()), texts


def key_files(world: World) -> list[str]:
    return sorted(p.name for p in (world.keys / "agencies").iterdir())


def test_a_rotation_that_fails_to_record_leaves_the_agency_signing_as_before(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = world.signers["police-a"]
    path = world.ledger.agency_key_path("police-a")

    def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database error; nothing was written: connection lost")

    monkeypatch.setattr(world.ledger, "append_system", down)
    with pytest.raises(StoreUnavailable):
        world.ledger.add_agency_key("police-a")
    monkeypatch.undo()
    assert load_key_file(path).key_id == old.key_id
    world.append("police-a")  # still signs with the key it has, which is still valid
    made = load_key_file(path.with_name("police-a.key.new"))

    key_id, installed = world.ledger.add_agency_key("police-a")  # run again
    assert (key_id, installed) == (made.key_id, path)
    assert load_key_file(path).key_id == made.key_id
    retired = path.with_name(f"police-a.{old.key_id[:16]}.retired")
    assert load_key_file(retired).key_id == old.key_id
    assert mode_of(retired) == mode_of(path) == 0o600
    assert "police-a.key.new" not in key_files(world)
    assert set(world.ledger.agency("police-a").keys) == {old.key_id, made.key_id}


def test_a_rotation_recorded_but_not_installed_is_finished_by_running_it_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = world.signers["police-a"]
    path = world.ledger.agency_key_path("police-a")

    def full(new: Path, path: Path) -> None:
        raise KeyFileError(f"cannot install key file {path}: No space left on device")

    monkeypatch.setattr("ledger.core.install_key_file", full)
    with pytest.raises(KeyFileError, match="No space left"):
        world.ledger.add_agency_key("police-a")
    monkeypatch.undo()
    events = world.ledger.store.catalog.count_events()
    key_id, _ = world.ledger.add_agency_key("police-a")
    assert world.ledger.store.catalog.count_events() == events  # recorded once, not twice
    assert load_key_file(path).key_id == key_id != old.key_id
    world.ledger.revoke_agency_key("police-a", old.key_id, "rotated")
    world.signers["police-a"] = load_key_file(path)
    world.append("police-a")
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_every_retired_key_is_kept_however_quickly_keys_are_rotated(world: World) -> None:
    path = world.ledger.agency_key_path("police-a")
    ids = [world.signers["police-a"].key_id]
    for _ in range(3):
        ids.append(world.ledger.add_agency_key("police-a")[0])
    assert load_key_file(path).key_id == ids[-1]
    for key_id in ids[:-1]:
        retired = path.with_name(f"police-a.{key_id[:16]}.retired")
        assert load_key_file(retired).key_id == key_id


def test_a_registration_that_fails_can_be_run_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database error; nothing was written: connection lost")

    monkeypatch.setattr(world.ledger, "append_many", down)
    with pytest.raises(StoreUnavailable):
        world.ledger.register_agency("health-c", "health", borough="Lewisham")
    monkeypatch.undo()
    assert "health-c.key" not in key_files(world)
    key_id, path = world.ledger.register_agency("health-c", "health", borough="Lewisham")
    assert path is not None and load_key_file(path).key_id == key_id
    assert "health-c.key.new" not in key_files(world)
    assert set(world.ledger.agency("health-c").keys) == {key_id}
