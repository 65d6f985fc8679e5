"""CPU spent during a benchmark phase, from /proc: the whole machine's, and that of
the ledger's server, PostgreSQL and the load generator.

Where a rate is bound by the machine rather than by waiting, the busy fraction says
so: the rate divided by it is what the same work would reach with every core busy
all the time, an upper bound no scheduling can pass.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(all jiffies, idle jiffies) since boot, over every core."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # idle and iowait


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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuSpent:
    seconds: float
    machine_busy: float  # fraction of all cores' time
    server: float  # CPU seconds of the server's process tree
    postgres: float
    load: float  # finished child processes of this one: the load generator


class CpuMeter:
    """Start before a phase, `stop()` after it; `server` is the supervisor's pid."""

    def __init__(self, server: int) -> None:
        self.server = server
        self._machine = _machine()
        self._procs = _processes()
        self._children = _children_cpu()

    def stop(self, seconds: float) -> CpuSpent:
        procs, machine, children = _processes(), _machine(), _children_cpu()
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
            load=children - self._children,
        )
