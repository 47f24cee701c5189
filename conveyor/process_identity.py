"""Which process a recorded pid is: the pid and its start, counted in seconds since boot.

Pids get reused, so a pid alone does not say the process is the one recorded. psutil's
`create_time()` is the kernel's boot time plus the start in ticks since boot, and the boot time
is derived from the wall clock (whole seconds in /proc/stat): an NTP step or slew moves it, and
every process recorded before the move would read as gone. The start since boot never moves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psutil

SAME_START = 0.01  # seconds: one kernel tick at the usual 100 Hz


def started_since_boot(pid: int) -> float | None:
    """When the process started, in seconds since boot; None when there is no such process."""
    try:
        for _ in range(3):
            boot = psutil.boot_time()
            created = psutil.Process(pid).create_time()
            if psutil.boot_time() == boot:  # the clock did not move between the two reads
                return created - boot
    except psutil.Error:
        return None
    return created - boot


def is_process(pid: int, started: float) -> bool:
    """The process with this pid is the one that started at `started` (seconds since boot)."""
    now = started_since_boot(pid)
    return now is not None and abs(now - started) < SAME_START


def recorded_start(service: Mapping[str, Any]) -> float:
    """A recorded service's start since boot, from this format or an earlier one: a wall-clock
    creation time (read against the boot time now: right unless the clock moved since) or the
    kernel's start ticks."""
    if "started" in service:
        return float(service["started"])
    if "create_time" in service:
        return float(service["create_time"]) - psutil.boot_time()
    return int(service["start_ticks"]) / os.sysconf("SC_CLK_TCK")
