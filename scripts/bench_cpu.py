"""CPU spent during a benchmark phase, from /proc: the whole machine's, and that of
the ledger's server, PostgreSQL and the load generator.

Where a rate is bound by the machine rather than by waiting, the busy fraction says
so: the rate divided by it is what the same work would reach with every core busy
all the time, an upper bound no scheduling can pass. The phase's middle is measured
(`Middle`), clear of the load generator's start-up and wind-down, which its own
rate leaves out too. Time the hypervisor gave to other machines (steal) counts as
neither busy nor idle: it was not this machine's to use.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(jiffies this machine had, idle jiffies) since boot, over every core."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq = (int(v) for v in f.readline().split()[1:8])
    # Not steal, nor guest time (counted in user and nice already).
    idle += iowait
    return user + nice + system + irq + softirq + idle, idle


def _processes() -> dict[int, tuple[str, int, float]]:
    """Each process: (command name, parent, CPU seconds)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(name)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return out


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSpent:
    seconds: float
    machine_busy: float  # fraction of all cores' time
    server: float  # CPU seconds of the server's process tree
    postgres: float
    load: float  # finished child processes of this one: the load generator


class CpuMeter:
    """Start before a phase, `stop()` after it; `server` is the supervisor's pid. The
    load is `load` if it is a process of its own (wrk), else this process's threads."""

    def __init__(self, server: int, load: str | None = None) -> None:
        self.server = server
        self.load = load
        self._machine = _machine()
        self._procs = _processes()
        self._own = _own_cpu()

    def stop(self, seconds: float) -> CpuSpent:
        procs, machine, own = _processes(), _machine(), _own_cpu()
        total, idle = machine[0] - self._machine[0], machine[1] - self._machine[1]

        def spent(pid: int) -> float:
            before = self._procs.get(pid)
            return procs[pid][2] - (before[2] if before else 0.0)

        tree = {self.server}
        for pid, (_, parent, _) in procs.items():
            if parent == self.server:
                tree.add(pid)  # the workers
        return CpuSpent(
            seconds=seconds,
            machine_busy=1 - idle / total if total else 0.0,
            server=sum(spent(pid) for pid in tree if pid in procs),
            postgres=sum(spent(pid) for pid, p in procs.items() if p[0].startswith("postgres")),
            load=(
                own - self._own
                if self.load is None
                else sum(spent(pid) for pid, p in procs.items() if p[0] == self.load)
            ),
        )


class Middle:
    """Measures the middle of a phase that starts now and lasts `seconds`, leaving out
    `margin` at each end, on a thread of its own; `result()` after the phase."""

    def __init__(self, server: int, seconds: float, load: str | None = None) -> None:
        self.margin = max(2.0, seconds / 10)
        self._server, self._seconds, self._load = server, seconds, load
        self._spent: CpuSpent | None = None
        self._thread = threading.Thread(target=self._measure, daemon=True)
        self._thread.start()

    def _measure(self) -> None:
        time.sleep(self.margin)
        meter = CpuMeter(self._server, self._load)
        window = max(self._seconds - 2 * self.margin, 0.5)
        time.sleep(window)
        self._spent = meter.stop(window)

    def result(self) -> CpuSpent:
        self._thread.join()
        assert self._spent is not None
        return self._spent
