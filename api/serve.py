"""`ledger serve`: uvicorn, with several workers each listening on its own socket.

uvicorn's own multi-worker mode shares one listening socket, and whichever worker
wakes first accepts a whole burst of connections: under keep-alive load one worker
ends up serving most clients while the other idles. Here each worker binds the
port with SO_REUSEPORT, so the kernel spreads connections across them evenly. The
supervisor restarts a worker that dies (killed, say) and stops them all on
SIGTERM or SIGINT. A client whose connection died with a worker retries on a new
one, which the kernel hands to a live worker. The supervisor also runs the
background integrator and watchdog, so that the workers only serve requests.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from ledger.core import Ledger
from ledger.errors import LedgerError
from ledger.policy import load_policy

from . import background
from .settings import settings_from_env

APP = "api.app:create_app"
# A worker that dies this soon after starting, this many times in a row, is failing
# to start (a bad setting, say): give up rather than restart it for ever.
QUICK_EXIT_S = 10.0
QUICK_EXITS = 3
logger = logging.getLogger("ledger.serve")


def _socket(host: str, port: int, shared: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise OSError if anything is bound to the port, another `ledger serve`
    included: its workers' SO_REUSEPORT sockets would otherwise admit ours beside
    them, and the kernel would split clients between two ledgers."""
    _socket(host, port, shared=False).close()


def tune_gc() -> None:
    """Keep the cycle collector's pauses out of request latency.

    A full collection walks every object the process holds (modules, the aggregate
    cache, cached case texts): tens of milliseconds with the event loop stopped,
    which set the p99 of appends under load (measured: p99 90-120 ms with the
    defaults, 53-66 ms with this). What exists at start-up is moved out of the
    collector's sight, and collections run less often; reference counting still
    frees almost everything at once.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _run(sock: socket.socket, access_log: bool, app: str, announce: bool = False) -> None:
    import uvicorn

    tune_gc()
    sock.listen(2048)
    config = uvicorn.Config(app, factory=True, log_level="info", access_log=access_log)
    if announce:  # uvicorn names no address for a socket handed to it
        host, port = sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info("serving on http://%s:%d", host, port)
    uvicorn.Server(config).run(sockets=[sock])


def _worker(host: str, port: int, access_log: bool, app: str) -> None:
    _run(_socket(host, port), access_log, app)


def _chores() -> tuple[Ledger, list[threading.Thread], threading.Event]:
    """Start the integrator and watchdog here, in the supervisor, and leave the
    workers without (see api/background.py)."""
    settings = settings_from_env()
    ledger = Ledger.open(settings.db, settings.keys, create=False)
    done = threading.Event()
    chores = background.start(ledger, load_policy(settings.policy), settings, done)
    os.environ["LEDGER_INTEGRATE_EVERY_S"] = "0"  # read by the workers' settings
    os.environ["LEDGER_SWEEP_EVERY_S"] = "0"
    return ledger, chores, done


def serve(host: str, port: int, workers: int, access_log: bool = True, app: str = APP) -> None:
    """Serve until SIGTERM or SIGINT; OSError if the port cannot be had. `app` is the
    factory's import path (another only in tests of the supervisor)."""
    if workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise LedgerError("several workers need SO_REUSEPORT, which this platform lacks")
    if workers <= 1:  # its own socket, not shared, refuses a port in use
        _run(_socket(host, port, shared=False), access_log, app, announce=True)
        return
    check_port_free(host, port)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    # Bound but not listening: the port is held before any worker starts, and no
    # connection is ever queued on this socket.
    held = _socket(host, port)
    ledger, chores, done = _chores()
    context = multiprocessing.get_context("spawn")
    stopping = False

    started: dict[int, float] = {}

    def start() -> BaseProcess:
        proc = context.Process(target=_worker, args=(host, port, access_log, app), daemon=False)
        proc.start()
        started[id(proc)] = time.monotonic()
        return proc

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [start() for _ in range(workers)]
    logger.info("serving on http://%s:%d with %d workers", host, port, workers)
    quick_exits = 0
    try:
        while not stopping:
            time.sleep(0.2)
            for n, proc in enumerate(procs):
                if proc.is_alive() or stopping:
                    continue
                if time.monotonic() - started.pop(id(proc)) < QUICK_EXIT_S:
                    quick_exits += 1
                    if quick_exits >= QUICK_EXITS:
                        raise LedgerError(
                            f"workers keep exiting at start-up (exit code {proc.exitcode}); "
                            "see the log above"
                        )
                else:
                    quick_exits = 0
                logger.warning("worker %s exited (%s); starting another", proc.pid, proc.exitcode)
                procs[n] = start()
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()
        for proc in procs:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.kill()
        background.finish(done, chores)
        ledger.close()
        held.close()
