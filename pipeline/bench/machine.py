"""The machine a benchmark runs on: its CPU model and how busy other processes keep it.

The project's machines are shared: a step timed while another job computes measures that
job, not ours. Benchmarks wait for a quiet machine (`wait_for_quiet`, bounded) and report
the load they ran under.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def busy_cores(interval: float = 0.5) -> float:
    """Cores busy machine-wide over `interval` s, from /proc/stat (0.0 where unavailable)."""
    def snapshot() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + values[4]  # all jiffies, idle + iowait

    try:
        total0, idle0 = snapshot()
        time.sleep(interval)
        total1, idle1 = snapshot()
    except (OSError, IndexError, ValueError):
        return 0.0
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def wait_for_quiet(budget_s: float, max_busy: float = 0.5) -> float:
    """Sleep while other processes keep more than `max_busy` cores busy, for at most
    `budget_s` seconds; returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < budget_s and busy_cores() > max_busy:
        time.sleep(1.0)
    return time.perf_counter() - start


def utc_now() -> str:
    """The date and minute a benchmark section is written, e.g. '2026-12-03 06:50 UTC'."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def bench_command(name: str, argv: list[str]) -> str:
    """The command line that reproduces a benchmark section: `mgtc bench <name> <argv>`."""
    return shlex.join(["mgtc", "bench", name, *argv])
