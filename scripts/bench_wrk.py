"""The HTTP benchmark's load generator: wrk, so the clients cost the server little CPU.

On a two-core machine, 32 Python client threads take about a core of their own, so
the server is measured with half the machine. wrk (C, epoll) drives the same 32
connections for a few per cent of a core; `scripts/bench_load.lua` gives each
connection thread its own share of pre-signed requests and keeps every receipt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench_cpu import CpuSpent, Middle

THREADS = 2
LUA = Path(__file__).with_name("bench_load.lua")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


class WrkLoad:
    """One timed phase: `requests` are (path, JSON bytes), each posted at most once
    unless `wrap`."""

    def __init__(
        self,
        base: str,
        token: str,
        requests: list[tuple[str, bytes]],
        seconds: float,
        work: Path,
        connections: int = 32,
        wrap: bool = False,
        server_pid: int | None = None,
    ) -> None:
        self.base, self.token, self.requests = base, token, requests
        self.seconds, self.work, self.connections = seconds, work, connections
        self.wrap = wrap  # reuse requests when all are sent (for routes that store nothing)
        self.receipts: dict[str, tuple[str, int, str]] = {}
        self.statuses: dict[int, int] = {}
        self.exhausted = 0
        self.p99_ms = self.p50_ms = 0.0
        self.completed = 0
        self.errors = 0
        self.elapsed = 0.0
        self.server_pid = server_pid  # if given, CPU is measured while wrk runs
        self.cpu: CpuSpent | None = None

    def p99(self) -> float:
        return self.p99_ms

    def run(self) -> float:
        self.work.mkdir(parents=True, exist_ok=True)
        reqs, out = self.work / "requests.tsv", self.work / "out.jsonl"
        with reqs.open("wb") as f:
            for path, content in self.requests:
                f.write(path.encode() + b"\t" + content + b"\n")
        env = {
            **os.environ,
            "BENCH_REQUESTS": str(reqs),
            "BENCH_OUT": str(out),
            "BENCH_TOKEN": self.token,
            "BENCH_THREADS": str(THREADS),
            **({"BENCH_WRAP": "1"} if self.wrap else {}),
        }
        middle = None if self.server_pid is None else Middle(self.server_pid, self.seconds, "wrk")
        subprocess.run(
            [
                "wrk",
                "-t",
                str(THREADS),
                "-c",
                str(self.connections),
                "-d",
                f"{max(1, round(self.seconds))}s",  # wrk takes whole seconds
                "--timeout",
                "30s",
                "-s",
                str(LUA),
                self.base,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        if middle is not None:
            self.cpu = middle.result()
        lines = out.read_text().splitlines()
        head = json.loads(lines[0])
        self.elapsed = head["duration_us"] / 1e6
        self.p99_ms, self.p50_ms = head["p99_us"] / 1000, head["p50_us"] / 1000
        self.errors = head["errors"] + head["timeouts"]
        for line in lines[1:]:
            item: dict[str, Any] = json.loads(line)
            if "status" in item and "count" in item and len(item) == 2:
                self.statuses[item["status"]] = self.statuses.get(item["status"], 0) + item["count"]
            elif "exhausted" in item and len(item) == 1:
                self.exhausted += item["exhausted"]
            else:
                for rec in item.get("receipts", [item]):
                    if "event_id" in rec and "event_hash" in rec:
                        self.receipts[rec["event_id"]] = (
                            rec["case_id"],
                            rec["seq"],
                            rec["event_hash"],
                        )
                    self.completed += 1
        return self.elapsed
