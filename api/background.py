"""The background integrator and watchdog: one of each per server.

Under `ledger serve --workers N` they run in the supervising process, not in each
worker. In a worker, integrating a few seconds' appends holds the interpreter for
tens of milliseconds at a time, stalling the event loop and the group committer
beside it; measured with 2 workers under 32 clients, single appends went from about
1,700 to 2,000 a second and p99 from 70-80 ms to under 30 ms with it moved out.
Two workers also did the same work twice, one waiting on the other's lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from ledger.core import Ledger
from ledger.policy import Policy
from ledger.sweep import sweep

from .settings import Settings

logger = logging.getLogger("ledger.api")
JOIN_S = 10.0  # how long stopping waits for a round under way
NICENESS = 10


def _lower_priority() -> None:
    """Let requests have the CPU first: this thread only (on Linux a thread has a
    priority of its own), as far as the system allows."""
    # Not Linux, or not permitted: the chores run at the usual priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


def every(
    seconds: float, stop: threading.Event, name: str, work: Callable[[], object]
) -> list[threading.Thread]:
    """Run `work` every `seconds` on a daemon thread until `stop` is set (0: never)."""

    def loop() -> None:
        _lower_priority()
        while not stop.wait(seconds):
            try:
                work()
            except Exception:  # keep running; the next round retries
                logger.exception("%s failed", name)

    if seconds <= 0:
        return []
    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return [thread]


def start(
    ledger: Ledger, policy: Policy, settings: Settings, stop: threading.Event
) -> list[threading.Thread]:
    """The integrator and the watchdog, as often as the settings say."""
    return every(settings.integrate_every_s, stop, "integrator", ledger.log.integrate_all) + every(
        settings.sweep_every_s,
        stop,
        "watchdog",
        lambda: sweep(ledger, policy, datetime.now(UTC)),
    )


def finish(stop: threading.Event, threads: list[threading.Thread]) -> None:
    """Stop them, letting a round under way end (within reason) before the ledger
    closes under it."""
    stop.set()
    for thread in threads:
        thread.join(timeout=JOIN_S)
