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

from ledger.audit import audit
from ledger.errors import KeyFileError
from ledger.keys import (
    create_private,
    generate_key_file,
    load_key_file,
    load_or_generate_key_file,
    write_private,
)
from ledger.vault import _key_file
from tests.conftest import CHILD, World


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_new_key_file_is_private_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "a.key"
    write_private(path, b"secret\n")
    assert path.read_bytes() == b"secret\n"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert leftovers(path.parent) == []
    with pytest.raises(KeyFileError, match="already exists; refusing to overwrite it"):
        write_private(path, b"other\n")
    assert path.read_bytes() == b"secret\n"
    assert leftovers(path.parent) == []


def test_creating_a_key_file_that_appeared_meanwhile_gives_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    assert create_private(path, b"first\n") == b"first\n"
    assert create_private(path, b"second\n") == b"first\n"
    assert path.read_bytes() == b"first\n"
    assert leftovers(tmp_path) == []


def test_a_vault_key_written_by_another_process_after_the_check_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment of the race: this process found no key file, another then wrote one.
    This process must take that key, not fail and not make a second one."""
    path = tmp_path / "master.key"
    theirs = bytes(range(32))
    write_private(path, base64.b64encode(theirs) + b"\n")
    monkeypatch.delenv("LEDGER_MASTER_KEY", raising=False)
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if p == path else real_exists(p))
    assert _key_file(path, "LEDGER_MASTER_KEY") == theirs
    assert base64.b64decode(path.read_bytes()) == theirs


def test_a_ledger_key_written_meanwhile_is_loaded_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    first = generate_key_file(path)
    assert load_or_generate_key_file(path).public_bytes == first.public_bytes
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_key_file(path)  # an agency's new key must never replace one


def test_without_hard_links_the_key_file_is_still_created_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("ledger.keys.os.link", no_links)
    path = tmp_path / "k.key"
    assert create_private(path, b"one\n") == b"one\n"
    assert create_private(path, b"two\n") == b"one\n"
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
