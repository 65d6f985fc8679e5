"""HTTP load benchmark (loopback only, bounded): run by `scripts/bench.py --part http`.

Starts `ledger serve --workers 2` on PostgreSQL and drives it over 32 connections
with signed single events, then batches of 100, to 500 cases for a fixed time; with
wrk when it is installed (`apt-get install wrk`: it costs the two-core machine a few
per cent of a core, where 32 Python client threads take about one), else with Python
threads. A second phase kills one worker with SIGKILL while Python clients retry
the same bodies. Afterwards the stored events must equal the receipts, with no
duplicate and no fork, and `ledger verify` must pass. A bare FastAPI echo route
under the same load is measured too: the ceiling of the HTTP layer on this machine.
The direct append_many rate the targets are set against is measured on the same
store, with the server stopped: before the HTTP phases, straight after the single
appends and at the end. The single appends count against the two samples around
them, the batches against all three.

Where the single appends' rate is bound is measured in the same run: the CPU the
machine, the server, PostgreSQL and wrk spent per event while they ran (and the
rate scaled to every core busy); the ledger's own path for the same clients with
HTTP taken away (client threads in as many processes as workers, each process
handing singles to its group committer); and append_many in transactions of as
many events as one worker can gather from its share of the clients.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from bench_cpu import Middle
from bench_wrk import WrkLoad, have_wrk

from ledger.canonical import canonical
from ledger.core import Ledger
from ledger.keys import Signer, load_key_file
from ledger.refs import pseudonym

CLIENTS = 32
CASES = 500
# Server processes; two by default (one per core here), more to try on other machines.
WORKERS = int(os.environ.get("LEDGER_BENCH_WORKERS", "2"))
CHILD = pseudonym("child", "http bench child", b"bench")
ECHO_APP = """
from fastapi import FastAPI, Request
app = FastAPI()
@app.post("/echo")
async def echo(request: Request) -> dict:
    body = await request.json()
    return {"event_id": body["body"]["event_id"], "seq": 1}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def signed(n: int, signer: Signer, tag: str) -> dict[str, Any]:
    body = {
        "v": 1,
        "case_id": f"H-{n % CASES:03d}",
        "event_id": f"{tag}-{n:08d}",
        "type": "CHILD_SEEN",
        "occurred_at": "2024-03-03T14:05:00Z",
        "agency": "bench-police",
        "actor": {"role": "officer"},
        "payload": {"child_ref": CHILD},
        "responds_to": [],
        "corrects": None,
        "key_id": signer.key_id,
    }
    return {"body": body, "sig": base64.b64encode(signer.sign_body(canonical(body))).decode()}


class Load:
    """Client threads posting until time is up, retrying failures with the same body."""

    def __init__(
        self,
        base: str,
        token: str,
        events: list[dict[str, Any]],
        seconds: float,
        path: str | None = None,
        batch: int = 1,
    ) -> None:
        self.base, self.token, self.events = base, token, events
        self.seconds, self.path, self.batch = seconds, path, batch
        self.latencies: list[float] = []
        self.receipts: dict[str, tuple[str, int, str]] = {}
        self.retries = 0
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            chunk = self.events[self.next : self.next + self.batch]
            self.next += len(chunk)
            return chunk

    def run_client(self, deadline: float) -> None:
        http = httpx.Client(
            base_url=self.base,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        while time.monotonic() < deadline:
            chunk = self.take()
            if not chunk:
                return
            if self.path is not None:
                path, payload = self.path, chunk[0]
            elif self.batch == 1:
                path, payload = f"/v1/cases/{chunk[0]['body']['case_id']}/events", chunk[0]
            else:
                path, payload = "/v1/events:batch", {"events": chunk}
            content = json.dumps(payload, separators=(",", ":")).encode()  # encoded once
            while True:
                t = time.perf_counter()
                try:
                    r = http.post(path, content=content)
                except httpx.HTTPError:
                    self.retries += 1
                    time.sleep(0.05)
                    continue
                if r.status_code in (502, 503, 504):
                    self.retries += 1
                    time.sleep(0.05)
                    continue
                break
            self.latencies.append((time.perf_counter() - t) * 1000)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
            data = r.json()
            for rec in data.get("receipts", [data]) if self.path is None else []:
                self.receipts[rec["event_id"]] = (rec["case_id"], rec["seq"], rec["event_hash"])
        http.close()

    def run(self, during: Any = None) -> float:
        deadline = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self.run_client, args=(deadline,)) for _ in range(CLIENTS)
        ]
        start = time.perf_counter()
        for t in threads:
            t.start()
        if during is not None:
            during()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    def p99(self) -> float:
        return (
            statistics.quantiles(self.latencies, n=100)[98]
            if len(self.latencies) > 100
            else max(self.latencies, default=0.0)
        )


def serve(url: str, keys: Path, port: int, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LEDGER_DB": url,
        "LEDGER_KEYS": str(keys),
        "LEDGER_RATE_LIMIT_PER_S": "1000000",
        "LEDGER_RATE_LIMIT_BURST": "1000000",
        "LEDGER_SWEEP_EVERY_S": "0",
        **env_extra,
    }
    exe = Path(sys.executable).parent / "ledger"
    return subprocess.Popen(
        [str(exe), "serve", "--port", str(port), "--workers", str(WORKERS), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_server(url: str, keys: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`ledger serve` on a free port, once it answers, and its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve(url, keys, port, {})
    try:
        wait_ready(base + "/v1/health")
    except BaseException:
        stop(proc)
        raise
    return proc, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def direct_rate_of(ledger: Ledger, events: list[dict[str, Any]], batch: int = 100) -> float:
    """Events per second appended in-process with append_many, in batches of `batch`."""
    from ledger.core import Submission

    t = time.perf_counter()
    repeats = 0
    for i in range(0, len(events), batch):
        receipts = ledger.append_many(
            [Submission(e["body"], base64.b64decode(e["sig"])) for e in events[i : i + batch]]
        )
        repeats += sum(r.duplicate for r in receipts)
    elapsed = time.perf_counter() - t
    if repeats:
        raise RuntimeError(f"a direct sample repeated {repeats} recorded events: not a rate")
    return len(events) / elapsed


def _committer_process(
    url: str, keys: Path, events: list[dict[str, Any]], seconds: float, out: Any, start: Any
) -> None:
    """One server worker's share of the clients, without HTTP: CLIENTS // WORKERS
    threads hand signed singles straight to a group committer and wait for each. All
    such processes set out together (`start`, a barrier), as the workers' clients do."""
    from ledger.core import Submission
    from ledger.groupcommit import GroupCommitter

    ledger = Ledger.open(url, keys, create=False)
    committer = GroupCommitter(ledger)  # as a worker's, with the default window
    pending = iter([Submission(e["body"], base64.b64decode(e["sig"])) for e in events])
    receipts: list[tuple[str, str, int, str]] = []
    failures: list[str] = []
    lock = threading.Lock()
    start.wait()
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                submission = next(pending, None)
            if submission is None:
                return
            try:
                r = committer.submit(submission).result()
            except Exception as e:  # reported, not lost: the figure would be wrong
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")
                return
            with lock:
                receipts.append((r.event_id, r.stream.removeprefix("case/"), r.seq, r.event_hash))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS // WORKERS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((time.perf_counter() - began, receipts, failures))
    committer.close()
    ledger.close()


def group_commit_without_http(
    url: str, keys: Path, signer: Signer, seconds: float
) -> tuple[float, dict[str, tuple[str, int, str]]]:
    """Singles per second through the ledger's own path with the HTTP layer taken
    away: the same clients in as many processes as the server has workers, each
    process with its group committer, on the same store. What the HTTP figure could
    reach at most, on this machine, if HTTP cost nothing."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    start = spawn.Barrier(WORKERS)
    budget = int(seconds * 3000) + 2_000  # more than each can commit in the time
    shares = [[signed(n, signer, f"nohttp{w}") for n in range(budget)] for w in range(WORKERS)]
    procs = [
        spawn.Process(target=_committer_process, args=(url, keys, share, seconds, out, start))
        for share in shares
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    failed = [f for _, _, fs in results for f in fs]
    if failed:
        raise RuntimeError(f"{len(failed)} appends without HTTP failed, first: {failed[0]}")
    receipts = {r[0]: (r[1], r[2], r[3]) for _, rs, _ in results for r in rs}
    return len(receipts) / max(elapsed for elapsed, _, _ in results), receipts


def bench_http(pg_url: str, tmp: Path, seconds: float) -> dict[str, Any]:
    schema = f"http_{secrets.token_hex(4)}"
    url = f"{pg_url}?schema={schema}"
    keys = tmp / "keys"
    ledger = Ledger.open(url, keys)
    ledger.init("http-bench/log")
    _, path = ledger.register_agency("bench-police", "police", borough="Bench")
    assert path is not None
    signer = load_key_file(path)
    token = ledger.tokens.issue("bench-agency", "agency", "bench-police")
    # Direct append_many rate on the same store, in the same run: before the HTTP
    # phases, straight after the single appends and again at the end, as the
    # machine's speed drifts over a run (by two fifths, seen here). The single appends
    # compare with the two samples around them, the batch target with all three.
    # Each is taken with the server stopped, nothing else running.
    # Each sample appends events of its own: one already recorded would be answered as
    # a repeat, which is another path.
    direct = [signed(n, signer, "direct") for n in range(80_000)]
    before, after_singles, at_end = direct[:20_000], direct[20_000:40_000], direct[40_000:60_000]
    small_before, small_at_end = direct[60_000:70_000], direct[70_000:]
    direct_rates = [direct_rate_of(ledger, before)]
    # The same, a transaction for as many events as one worker's group committer can
    # gather from its share of the clients, each waiting for its answer: every
    # transaction's own cost (its locks, reading the heads, the commit) is
    # spread over that many events, not a hundred.
    per_worker = CLIENTS // WORKERS
    direct_small = [direct_rate_of(ledger, small_before, per_worker)]
    # The server's integrator would otherwise spend the first phase on this backlog.
    ledger.log.integrate_all()

    use_wrk = have_wrk()
    if not use_wrk:
        print(
            "bench_http: wrk not found (apt-get install wrk): Python client threads are the "
            "load, and on two cores they bound the HTTP figures (see http_bare_fastapi_echo)",
            file=sys.stderr,
        )
    rate_cap = 6000 if use_wrk else 2000  # more than the clients can post in the time
    budget = int(seconds * rate_cap) + 5_000
    singles = [signed(n, signer, "single") for n in range(budget)]
    batches = [signed(n, signer, "batch") for n in range(budget * 2)]
    killed = [signed(n, signer, "kill") for n in range(int(seconds * 2000) // 2 + 5_000)]

    proc, base = start_server(url, keys)
    single: Load | WrkLoad
    try:
        if use_wrk:
            single = WrkLoad(
                base,
                token,
                [(f"/v1/cases/{e['body']['case_id']}/events", compact(e)) for e in singles],
                seconds,
                tmp / "wrk-single",
                server_pid=proc.pid,
            )
            single_time = single.run()
            assert single.cpu is not None
            single_cpu = single.cpu
        else:
            single = Load(base, token, singles, seconds)
            middle = Middle(proc.pid, seconds)
            single_time = single.run()
            single_cpu = middle.result()
    finally:
        stop(proc)
    direct_rates.append(direct_rate_of(ledger, after_singles))

    proc, base = start_server(url, keys)
    batch: Load | WrkLoad
    try:
        if use_wrk:
            batch = WrkLoad(
                base,
                token,
                [
                    ("/v1/events:batch", compact({"events": batches[i : i + 100]}))
                    for i in range(0, len(batches), 100)
                ],
                seconds / 2,
                tmp / "wrk-batch",
            )
            batch_time = batch.run()
        else:
            batch = Load(base, token, batches, seconds / 2, batch=100)
            batch_time = batch.run()

        def kill_a_worker() -> None:
            time.sleep(seconds / 4)
            children = subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
            ).stdout.split()
            workers = [int(c) for c in children]
            if workers:
                os.kill(workers[-1], signal.SIGKILL)

        # Killing a worker needs clients that retry the same body: Python threads.
        crash = Load(base, token, killed, seconds / 2)
        crash.run(during=kill_a_worker)
    finally:
        stop(proc)
    no_http_rate, no_http = group_commit_without_http(url, keys, signer, seconds / 2)
    direct_rates.append(direct_rate_of(ledger, at_end))
    direct_small.append(direct_rate_of(ledger, small_at_end, per_worker))
    direct_rate = statistics.mean(direct_rates)
    around_singles = statistics.mean(direct_rates[:2])
    around_no_http = statistics.mean(direct_rates[1:])

    # What was acknowledged is what is stored: no loss, no duplicate, no fork.
    stored: dict[str, tuple[str, int, str]] = {}
    duplicates = 0
    for case_id in ledger.iter_case_ids():
        for e in ledger.case_envelopes(case_id, cached=False):
            if e.event_id in stored:
                duplicates += 1
            stored[e.event_id] = (case_id, e.seq, e.event_hash)
    acknowledged = {**single.receipts, **batch.receipts, **crash.receipts, **no_http}
    missing = [k for k, v in acknowledged.items() if stored.get(k) != v]
    from ledger.audit import audit

    report = audit(ledger.store, ledger.ledger_signer().public_bytes)
    ledger.close()

    echo_port = free_port()
    echo_dir = tmp / "echo"
    echo_dir.mkdir()
    (echo_dir / "echo_app.py").write_text(ECHO_APP)
    echo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "echo_app:app",
            "--port",
            str(echo_port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=echo_dir,
        start_new_session=True,
    )
    bare: Load | WrkLoad
    try:
        wait_ready(f"http://127.0.0.1:{echo_port}/docs")
        if use_wrk:
            bare = WrkLoad(
                f"http://127.0.0.1:{echo_port}",
                token,
                [("/echo", compact(e)) for e in singles],
                seconds,
                tmp / "wrk-echo",
                wrap=True,
            )
        else:
            bare = Load(f"http://127.0.0.1:{echo_port}", token, singles, seconds, path="/echo")
        bare_time = bare.run()
    finally:
        stop(echo)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(f"DROP SCHEMA {schema} CASCADE")
    single_rate = len(single.receipts) / single_time
    batch_rate = len(batch.receipts) / batch_time
    bare_rate = (
        (bare.completed - bare.exhausted) if isinstance(bare, WrkLoad) else len(bare.latencies)
    ) / bare_time
    exhausted = sum(x.exhausted for x in (single, batch, bare) if isinstance(x, WrkLoad))
    refused = {
        str(code): count
        for x in (single, batch, bare)
        if isinstance(x, WrkLoad)
        for code, count in x.statuses.items()
        if code not in (200, 201)
    }
    return {
        "http_store": "postgresql",
        "http_clients": CLIENTS,
        "http_workers": WORKERS,
        "http_load_generator": "wrk" if use_wrk else "python threads",
        "http_requests_exhausted": exhausted,
        "http_non_2xx": refused,
        "http_cases": CASES,
        "http_seconds": seconds,
        "http_direct_append_events_per_s": round(direct_rate),
        "http_direct_append_events_per_s_samples": [round(r) for r in direct_rates],
        "http_direct_append_events_per_s_around_singles": round(around_singles),
        f"http_direct_append_batches_of_{per_worker}_events_per_s": round(
            statistics.mean(direct_small)
        ),
        "http_append_events_per_s": round(single_rate),
        "http_append_share_of_direct": round(single_rate / around_singles, 3),
        # Where the singles' rate is bound: the machine's busy fraction and CPU per
        # event during that phase (ledger server, PostgreSQL, load generator, and
        # everything on the machine), and the rate scaled to every core busy.
        "http_append_machine_busy": round(single_cpu.machine_busy, 3),
        "http_append_cpu_ms_per_event": {
            # Over the phase's middle, at the phase's rate.
            name: round(cpu / (single_rate * single_cpu.seconds) * 1000, 3)
            for name, cpu in (
                ("server", single_cpu.server),
                ("postgres", single_cpu.postgres),
                ("load_generator", single_cpu.load),
                (
                    "machine",
                    single_cpu.machine_busy * (os.cpu_count() or 1) * single_cpu.seconds,
                ),
            )
        },
        "http_append_events_per_s_at_full_cpu": round(
            single_rate / max(single_cpu.machine_busy, 1e-9)
        ),
        "group_commit_without_http_events_per_s": round(no_http_rate),
        "http_batch_events_per_s": round(batch_rate),
        "http_p99_ms": round(single.p99(), 1),
        "http_bare_fastapi_echo_requests_per_s": round(bare_rate),
        "http_bare_fastapi_echo_p99_ms": round(bare.p99(), 1),
        "http_kill_phase": {"acknowledged": len(crash.receipts), "client_retries": crash.retries},
        "http_acknowledged": len(acknowledged),
        "http_acknowledged_missing_or_different": len(missing),
        "http_duplicate_event_ids": duplicates,
        "http_verify_ok": report.ok,
        "http_targets_met": {
            "append": single_rate >= 0.5 * around_singles,
            "batch": batch_rate >= 0.8 * direct_rate,
            "p99": single.p99() < 100,
        },
        # Not targets: whether the append target would be within reach with every
        # core busy, and through the ledger's own path with no HTTP layer.
        "http_append_bounds_reach_target": {
            "at_full_cpu": single_rate / max(single_cpu.machine_busy, 1e-9) >= 0.5 * around_singles,
            "without_http": no_http_rate >= 0.5 * around_no_http,
        },
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        pg = os.environ.get("LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
        print(
            json.dumps(
                bench_http(pg, Path(d), float(sys.argv[1]) if len(sys.argv) > 1 else 60.0), indent=2
            )
        )
