"""Several processes against one store: concurrent writers, and a killed bulk import."""

from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from ledger.audit import audit
from ledger.canonical import canonical
from ledger.core import Ledger
from tests.conftest import CHILD, PG_URL, World, free_port

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ledger.canonical import canonical
    from ledger.core import Ledger, Submission
    from ledger.keys import load_key_file
    url, keys, agency, tag = sys.argv[1:5]
    ledger = Ledger.open(url, Path(keys), create=False)
    signer = load_key_file(ledger.agency_key_path(agency))
    for n in range(100):
        body = {"v": 1, "case_id": "SHARED", "event_id": f"{tag}-{n}", "type": "CHILD_SEEN",
                "occurred_at": "2024-03-03T14:05:00Z", "agency": agency,
                "actor": {"role": "practitioner"}, "payload": {}, "responds_to": [],
                "corrects": None, "key_id": signer.key_id}
        ledger.append(Submission(body, signer.sign_body(canonical(body))))
    ledger.close()
""")


def test_two_processes_appending_to_one_case_leave_one_chain(world: World) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, world.url, str(world.keys), agency, tag])
        for agency, tag in (("police-a", "p"), ("csc-b", "c"))
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    envs = world.ledger.case_envelopes("SHARED")
    assert [e.seq for e in envs] == list(range(1, 201))
    assert all(b.prev_hash == a.event_hash for a, b in itertools.pairwise(envs))
    assert {e.event_id[0] for e in envs} == {"p", "c"}
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


BATCH_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ledger.canonical import canonical
    from ledger.core import Ledger, Submission
    from ledger.keys import load_key_file
    url, keys, agency, tag, step = sys.argv[1:6]
    ledger = Ledger.open(url, Path(keys), create=False)
    signer = load_key_file(ledger.agency_key_path(agency))
    cases = [f"M-{n}" for n in range(6)][:: int(step)]
    for b in range(40):
        batch = []
        for n, case_id in enumerate(cases):
            body = {"v": 1, "case_id": case_id, "event_id": f"{tag}-{b}-{n}",
                    "type": "CHILD_SEEN", "occurred_at": "2024-03-03T14:05:00Z",
                    "agency": agency, "actor": {"role": "practitioner"}, "payload": {},
                    "responds_to": [], "corrects": None, "key_id": signer.key_id}
            batch.append(Submission(body, signer.sign_body(canonical(body))))
        ledger.append_many(batch)
    ledger.close()
""")


def test_two_processes_appending_batches_across_the_same_cases_leave_one_chain_each(
    world: World,
) -> None:
    """Each batch touches every case, the two processes naming them in opposite
    orders: every case keeps one unbroken chain, whoever wrote which event."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BATCH_WRITER, world.url, str(world.keys), agency, tag, step]
        )
        for agency, tag, step in (("police-a", "p", "1"), ("csc-b", "c", "-1"))
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    for n in range(6):
        envs = world.ledger.case_envelopes(f"M-{n}", cached=False)
        assert [e.seq for e in envs] == list(range(1, 81))
        assert all(b.prev_hash == a.event_hash for a, b in itertools.pairwise(envs))
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_sigkill_during_import_loses_nothing_acknowledged(world: World, tmp_path: Path) -> None:
    path = tmp_path / "historic.jsonl"
    with path.open("w") as f:
        for n in range(4000):
            body = world.body(
                "police-a",
                case_id=f"H-{n % 7}",
                event_id=f"hist-{n:05d}",
                payload={"child_ref": CHILD},
            )
            f.write(json.dumps({"body": body}) + "\n")
    exe = Path(sys.executable).parent / "ledger"
    argv = [
        str(exe),
        "import",
        str(path),
        "--sign",
        "--batch",
        "50",
        "--db",
        world.url,
        "--keys",
        str(world.keys),
    ]
    before = world.ledger.store.catalog.count_events()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while world.ledger.store.catalog.count_events() < before + 200:
        assert proc.poll() is None, "import finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = world.ledger.store.catalog.count_events() - before
    assert 0 < written < 4000, written
    assert written % 50 == 0, f"a partial batch of {written % 50} events was left"
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems
    # Running the import again completes it without duplicating what was written.
    done = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"appended": 4000 - written, "duplicates": written}
    assert world.ledger.store.catalog.count_events() - before == 4000
    assert audit(world.ledger.store, world.ledger.ledger_signer().public_bytes).ok


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_opening_an_existing_postgres_ledger_waits_on_no_table_lock(world: World) -> None:
    """A second process opening the ledger must not take DDL locks that live writers hold.

    CREATE INDEX IF NOT EXISTS takes a SHARE lock even when the index exists; run on
    every open, it blocked behind (and could deadlock with) a concurrent append.
    """
    from ledger.pgstore import EVENTS_TABLE, conninfo, open_postgres
    from ledger.store import INDEX_TABLE, parse_db_url

    url = parse_db_url(world.url)
    opened: list[object] = []
    with psycopg.connect(conninfo(url)) as writer:  # a transaction held open, as an append holds
        for table in (INDEX_TABLE, EVENTS_TABLE):
            writer.execute(
                SQL("LOCK TABLE {}.{} IN ROW EXCLUSIVE MODE").format(
                    Identifier(url.schema), Identifier(table)
                )
            )
        opener = threading.Thread(target=lambda: opened.append(open_postgres(url)), daemon=True)
        opener.start()
        opener.join(timeout=10)
        blocked = opener.is_alive()
        writer.rollback()
    opener.join(timeout=60)
    assert not blocked, "opening an existing ledger waited on a lock held by a writer"
    assert len(opened) == 1


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on `port` (IPv4), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            found.add(fields[9])
    return found


def _listeners(port: int) -> set[int]:
    """The processes holding a socket that listens on `port`."""
    inodes = _listening_inodes(port)
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(proc.name))
    return pids


def _workers(port: int, count: int) -> set[int]:
    """The listening processes, once there are `count` of them (else none)."""
    pids = _listeners(port)
    return pids if len(pids) == count else set()


def _wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start_serve(where: World | Served, port: int, **env: str) -> subprocess.Popen[bytes]:
    """`ledger serve --workers 2` in a session of its own (stop it with killpg)."""
    exe = Path(sys.executable).parent / "ledger"
    return subprocess.Popen(
        [str(exe), "serve", "--keys", str(where.keys), "--port", str(port), "--workers", "2"],
        env={**os.environ, "LEDGER_DB": where.url, "LEDGER_SWEEP_EVERY_S": "0", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_serve_workers_each_listen_and_a_killed_one_is_replaced(world: World) -> None:
    port = free_port()
    token = world.ledger.tokens.issue("serve-test", "agency", "police-a")
    serve = _start_serve(world, port)
    base = f"http://127.0.0.1:{port}"
    try:
        # Each worker listens on a socket of its own: the kernel spreads connections.
        first = _wait("two listening workers", lambda: _workers(port, 2))
        assert serve.pid not in first
        _wait("health", lambda: httpx.get(base + "/v1/health", timeout=5).status_code == 200)
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        # The survivor answers (a connection the kernel gave the dying worker in its
        # last moment is reset, and retried); the supervisor starts a replacement.
        _wait("the survivor", lambda: httpx.get(base + "/v1/health", timeout=5).status_code == 200)
        replaced = _wait("a replacement", lambda: victim not in (p := _workers(port, 2)) and p)
        assert first - {victim} < replaced
        body = world.body("police-a", case_id="SERVED")
        sig = base64.b64encode(world.signers["police-a"].sign_body(canonical(body))).decode()
        for _ in range(4):  # on fresh connections, so both workers take some
            r = httpx.post(
                f"{base}/v1/cases/SERVED/events",
                json={"body": body, "sig": sig},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert r.status_code in (200, 201), r.text
            body = world.body("police-a", case_id="SERVED")
            sig = base64.b64encode(world.signers["police-a"].sign_body(canonical(body))).decode()
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    assert _listeners(port) == set()
    ledger = Ledger.open(world.url, world.keys, create=False)
    try:
        assert [e.seq for e in ledger.case_envelopes("SERVED")] == [1, 2, 3, 4]
        assert audit(ledger.store, ledger.ledger_signer().public_bytes).ok
    finally:
        ledger.close()


def test_serve_integrates_in_the_supervisor_and_the_workers_do_not(world: World) -> None:
    """The workers start with the integrator and watchdog off (their settings say 0);
    appends are integrated all the same, by the supervising process."""
    port = free_port()
    token = world.ledger.tokens.issue("serve-test", "agency", "police-a")
    serve = _start_serve(world, port, LEDGER_INTEGRATE_EVERY_S="0.3", LEDGER_SWEEP_EVERY_S="60")
    base = f"http://127.0.0.1:{port}"
    try:
        workers = _wait("two listening workers", lambda: _workers(port, 2))
        for pid in workers:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"LEDGER_INTEGRATE_EVERY_S=0" in environ
            assert b"LEDGER_SWEEP_EVERY_S=0" in environ
        body = world.body("police-a", case_id="INTEGRATED")
        event = {
            "body": body,
            "sig": base64.b64encode(world.signers["police-a"].sign_body(canonical(body))).decode(),
        }

        def leaf() -> Any:
            r = httpx.post(
                f"{base}/v1/cases/INTEGRATED/events",
                json=event,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert r.status_code in (200, 201), r.text
            return r.json()["leaf_index"] is not None

        _wait("the event integrated", leaf, timeout=30)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        assert serve.wait(timeout=30) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use_says_so_in_one_line(world: World, workers: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = _serve_until_it_exits(world, busy.getsockname()[1], workers)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot listen on 127.0.0.1:" in out.stderr
    assert "Traceback" not in out.stderr


def test_served_workers_keep_startup_objects_out_of_the_cycle_collector() -> None:
    import gc

    from api.serve import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (50_000, 20, 100)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _stream_lock(store: Any, stream: str) -> list[Any]:
    """The two keys of a stream's write lock, as arguments to pg_advisory_*."""
    from ledger.pgstore import stream_lock_key
    from ledger.verify import stream_id

    return [store.catalog.lock_space, stream_lock_key(stream_id(stream))]


def _lock_stream(conn: psycopg.Connection[Any], store: Any, stream: str, how: str) -> None:
    """Take (`pg_advisory_lock`, `..._shared`) or let go of (`pg_advisory_unlock`,
    `..._shared`) a stream's write lock in another session, as another writer would."""
    conn.execute(f"SELECT {how}(hashtext(%s), %s)", _stream_lock(store, stream))


def _wait_for(done: list[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)


def test_postgres_writers_wait_their_turn_on_a_case_and_not_on_others(world: World) -> None:
    """Another writer holding a case holds appends to it off until it lets go, and
    the events then chain after whatever it wrote; an append to another case goes on
    meanwhile. SQLite serialises writers itself."""
    store = world.ledger.store
    if store.url.is_sqlite:
        assert store.writer_lock is None
        return
    first = world.append("police-a", "C-1")
    other = Ledger.open(world.url, world.keys, create=False)  # another process's ledger
    holder = psycopg.connect(PG_URL, autocommit=True)
    try:
        _lock_stream(holder, store, "case/C-1", "pg_advisory_lock")
        done: list[Any] = []
        thread = threading.Thread(target=lambda: done.append(world.append("police-a", "C-1")))
        thread.start()
        beside: list[Any] = []
        body = world.body("police-a", "C-2")
        writer = threading.Thread(target=lambda: beside.append(other.append(world.signed(body))))
        writer.start()
        _wait_for(beside)
        assert [r.seq for r in beside] == [1]  # another case: not held up
        assert done == [] and thread.is_alive()  # waiting for the case, nothing written
        assert [e.seq for e in world.ledger.case_envelopes("C-1", cached=False)] == [1]
        other_append = world.signed(world.body("police-a", "C-1"))
        other_thread = threading.Thread(target=lambda: done.append(other.append(other_append)))
        other_thread.start()
        time.sleep(0.5)
        assert done == []  # nor from another process
        _lock_stream(holder, store, "case/C-1", "pg_advisory_unlock")
        thread.join(timeout=30)
        other_thread.join(timeout=30)
        writer.join(timeout=30)
        assert sorted(r.seq for r in done) == [first.seq + 1, first.seq + 2]
    finally:
        holder.close()
        other.close()
    envs = world.ledger.case_envelopes("C-1", cached=False)
    assert all(b.prev_hash == a.event_hash for a, b in itertools.pairwise(envs))
    assert audit(store, world.ledger.ledger_signer().public_bytes).ok


def test_postgres_appends_wait_while_their_agency_keys_are_being_changed(world: World) -> None:
    """A batch reads its signing agency's stream (to confirm the key) under a shared
    lock: a writer changing that agency (revoking a key takes it exclusively) holds
    the batch off, and one only reading it does not; another agency's appends go on."""
    store = world.ledger.store
    if store.url.is_sqlite:
        return
    holder = psycopg.connect(PG_URL, autocommit=True)
    try:
        _lock_stream(holder, store, "agency/police-a", "pg_advisory_lock_shared")
        assert world.append("police-a", "C-1").seq == 1  # readers share it
        _lock_stream(holder, store, "agency/police-a", "pg_advisory_unlock_shared")
        _lock_stream(holder, store, "agency/police-a", "pg_advisory_lock")
        done: list[Any] = []
        thread = threading.Thread(target=lambda: done.append(world.append("police-a", "C-1")))
        thread.start()
        time.sleep(1.0)
        assert done == [] and thread.is_alive()
        other = Ledger.open(world.url, world.keys, create=False)
        try:
            assert other.append(world.signed(world.body("csc-b", "C-3"))).seq == 1
        finally:
            other.close()
        assert done == []
        _lock_stream(holder, store, "agency/police-a", "pg_advisory_unlock")
        thread.join(timeout=30)
        assert [r.seq for r in done] == [2]
    finally:
        holder.close()


def test_postgres_batch_takes_its_case_locks_in_one_order(world: World) -> None:
    """A batch locks its cases in key order, whatever order its events name them in:
    waiting for a case another writer holds, it holds none of the cases after it, so
    writers never each hold a lock the other waits for."""
    store = world.ledger.store
    if store.url.is_sqlite:
        return
    from ledger.pgstore import stream_lock_key
    from ledger.verify import stream_id

    names = sorted(
        (f"K-{n}" for n in range(20)), key=lambda c: stream_lock_key(stream_id(f"case/{c}"))
    )
    low, high = names[0], names[-1]
    holder = psycopg.connect(PG_URL, autocommit=True)
    other = Ledger.open(world.url, world.keys, create=False)
    try:
        _lock_stream(holder, store, f"case/{low}", "pg_advisory_lock")
        batch = [world.signed(world.body("police-a", c)) for c in (high, low)]
        done: list[Any] = []
        thread = threading.Thread(target=lambda: done.append(world.ledger.append_many(batch)))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waiting for the low case
        beside: list[Any] = []
        body = world.body("csc-b", high)
        writer = threading.Thread(target=lambda: beside.append(other.append(world.signed(body))))
        writer.start()
        _wait_for(beside, timeout=10)
        assert [r.seq for r in beside] == [1], "the waiting batch held the high case"
        _lock_stream(holder, store, f"case/{low}", "pg_advisory_unlock")
        thread.join(timeout=30)
        writer.join(timeout=30)
        assert [[r.seq for r in receipts] for receipts in done] == [[2, 1]]
    finally:
        holder.close()
        other.close()


def _write_lock_free(store: Any, stream: str = "case/C-1") -> bool:
    """Whether another session could take the stream's write lock right now."""
    with psycopg.connect(PG_URL, autocommit=True) as probe:
        row = probe.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s), %s)", _stream_lock(store, stream)
        ).fetchone()
        assert row is not None
        return bool(row[0])  # the session's end lets go of it again


def _kill_write_transaction(recorder: Any) -> None:
    """Terminate the backend of this thread's write transaction, which must be held."""
    assert recorder.writer.held is not None
    pid = recorder.writer.held.conn.info.backend_pid
    with psycopg.connect(PG_URL, autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])


def test_postgres_write_lock_ends_with_the_transaction_that_took_it(world: World) -> None:
    """The write lock belongs to the write transaction: free again once a batch has
    committed and once one is refused, with nothing left to release by hand."""
    from ledger.errors import Conflict

    store = world.ledger.store
    if store.url.is_sqlite:
        assert store.writer_lock is None
        return
    first = world.append("police-a")
    assert _write_lock_free(store)
    body = world.body("police-a")
    world.ledger.append(world.signed(body))
    with pytest.raises(Conflict):
        world.ledger.append(world.signed({**body, "occurred_at": "2024-03-04T09:00:00Z"}))
    assert _write_lock_free(store)
    assert world.append("police-a").seq == first.seq + 2


def test_postgres_writer_whose_connection_dies_mid_batch_writes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection that took the write lock and read the stream heads is killed
    before the batch is inserted: the append is refused as the database being
    unavailable (safe to retry), nothing is stored, the lock is free, and the next
    append chains where the last committed one left off."""
    from ledger.errors import StoreUnavailable

    store = world.ledger.store
    if store.url.is_sqlite:
        assert store.writer_lock is None
        return
    from ledger.pgstore import IndexedPostgresRecorder

    before = world.append("police-a")
    recorder = store.app.recorder
    assert isinstance(recorder, IndexedPostgresRecorder)
    catalog = store.catalog
    real_current = catalog.current

    def current_then_connection_lost(held: Any) -> Any:
        found = real_current(held)
        _kill_write_transaction(recorder)  # read under the lock, in its transaction
        return found

    monkeypatch.setattr(catalog, "current", current_then_connection_lost)
    lost = world.body("police-a")
    with pytest.raises(StoreUnavailable):
        world.ledger.append(world.signed(lost))
    monkeypatch.undo()
    assert recorder.writer.held is None
    assert _write_lock_free(store)
    assert world.ledger.store.catalog.lookup([lost["event_id"]]) == {}
    after = world.ledger.append(world.signed(lost))  # the client's retry
    assert (after.case_id, after.seq) == (before.case_id, before.seq + 1)
    assert audit(store, world.ledger.ledger_signer().public_bytes).ok


def test_postgres_batch_whose_commit_fails_is_not_cached_as_written(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is inserted, then its connection dies before the commit: nothing is
    stored, and this process must not keep the case at the head it never committed.
    Another writer then records that version of the case; the next append here
    chains after the other writer's event, not after the lost one."""
    from ledger.errors import StoreUnavailable
    from ledger.pgstore import IndexedPostgresRecorder

    store = world.ledger.store
    if store.url.is_sqlite:
        assert store.writer_lock is None
        return
    world.append("police-a")
    recorder = store.app.recorder
    assert isinstance(recorder, IndexedPostgresRecorder)
    real_insert = recorder.insert_events

    def insert_then_connection_lost(stored_events: Any, **kwargs: Any) -> Any:
        done = real_insert(stored_events, **kwargs)
        _kill_write_transaction(recorder)
        return done

    monkeypatch.setattr(recorder, "insert_events", insert_then_connection_lost)
    with pytest.raises(StoreUnavailable):
        world.append("police-a")
    monkeypatch.undo()
    world.follows_another_writer()


def test_the_interpreter_is_handed_back_promptly_only_while_the_shared_lock_is_held(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a PostgreSQL batch's write transaction is held (other writers may wait
    on its locks), other threads are asked to hand the interpreter back within half a millisecond; the usual
    interval is restored afterwards, also after a refused batch. A SQLite ledger,
    whose writers do not wait on this process, leaves it alone."""
    from ledger.errors import Conflict
    from ledger.pgstore import HANDOVER_S

    usual = sys.getswitchinterval()
    catalog = world.ledger.store.catalog
    real_current = catalog.current
    seen: list[float] = []

    def noting(held: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return real_current(held)

    monkeypatch.setattr(catalog, "current", noting)
    body = world.body("police-a")
    world.ledger.append(world.signed(body))
    assert sys.getswitchinterval() == usual
    with pytest.raises(Conflict):
        world.ledger.append(world.signed({**body, "occurred_at": "2024-03-04T09:00:00Z"}))
    assert sys.getswitchinterval() == usual
    shared = world.ledger.store.writer_lock is not None
    assert seen and all(s == (HANDOVER_S if shared else usual) for s in seen)


@dataclass
class Served:
    url: str
    keys: Path


@pytest.fixture
def on_sqlite(tmp_path: Path) -> Served:
    """A ledger for what `ledger serve` refuses before the store matters."""
    served = Served(f"sqlite:///{tmp_path}/ledger.sqlite", tmp_path / "keys")
    Ledger.open(served.url, served.keys).init("test.example/log")
    return served


def _serve_until_it_exits(world: World | Served, port: int, workers: int = 2, **env: str) -> Any:
    """`ledger serve` run to its end, for the ways it refuses to start."""
    exe = str(Path(sys.executable).parent / "ledger")
    return subprocess.run(
        [exe, "serve", "--keys", str(world.keys), "--port", str(port), "--workers", str(workers)],
        env={**os.environ, "LEDGER_DB": world.url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_gives_up_when_workers_keep_failing_at_start_up(on_sqlite: Served) -> None:
    """What the checks before start-up cannot foresee (here, an app that will not
    load) makes each worker exit at once: the supervisor stops restarting them."""
    script = textwrap.dedent(f"""
        import sys
        from api.serve import serve
        from ledger.errors import LedgerError
        try:
            serve("127.0.0.1", {free_port()}, 2, app="api.app:no_such_factory")
        except LedgerError as e:
            print(e, file=sys.stderr)
            sys.exit(1)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "LEDGER_DB": on_sqlite.url, "LEDGER_KEYS": str(on_sqlite.keys)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1].startswith("workers keep exiting at start-up"), out.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"LEDGER_MAX_BODY_BYTES": "lots"},
            "LEDGER_MAX_BODY_BYTES: Input should be a valid integer",
        ),
        ({"LEDGER_RATE_LIMIT_PER_S": "-1"}, "LEDGER_RATE_LIMIT_PER_S: Input should be greater"),
        ({"LEDGER_CORS_ORIGINS": "https://a.example"}, "LEDGER_CORS_ORIGINS: cannot be parsed"),
        ({"LEDGER_GROUP_COMMIT_WINDOW_MS": "5000"}, "LEDGER_GROUP_COMMIT_WINDOW_MS: Input should"),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_refuses_a_bad_setting_in_one_line(
    on_sqlite: Served, env: dict[str, str], named: str, workers: int
) -> None:
    out = _serve_until_it_exits(on_sqlite, free_port(), workers, **env)
    assert out.returncode == 2
    assert out.stderr.startswith(f"ledger: error: {named}")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--port", "70000", "is not a port number"), ("--workers", "0", "at least 1")],
)
def test_serve_refuses_a_bad_port_or_worker_count_in_one_line(
    on_sqlite: Served, flag: str, value: str, says: str
) -> None:
    exe = str(Path(sys.executable).parent / "ledger")
    out = subprocess.run(
        [exe, "serve", "--keys", str(on_sqlite.keys), flag, value],
        env={**os.environ, "LEDGER_DB": on_sqlite.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and says in out.stderr


def test_a_second_serve_on_a_port_in_use_is_refused_not_admitted_beside_it(
    on_sqlite: Served,
) -> None:
    """The workers' SO_REUSEPORT sockets would admit another server's beside them, and
    the kernel would split clients between two ledgers: the port is checked first."""
    port = free_port()
    first = _start_serve(on_sqlite, port)
    try:
        serving = _wait("two listening workers", lambda: _workers(port, 2))
        for workers in (1, 2):
            out = _serve_until_it_exits(on_sqlite, port, workers)
            assert out.returncode == 2
            assert out.stderr == (
                f"ledger: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
            )
        assert _listeners(port) == serving  # nobody admitted beside the first server
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        assert first.wait(timeout=30) == 0


def test_serve_refuses_a_bad_policy_in_one_line(world: World) -> None:
    out = _serve_until_it_exits(world, free_port(), LEDGER_POLICY="/nonexistent/policy.yaml")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "cannot read policy" in out.stderr
