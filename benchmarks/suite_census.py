"""Where the test suite's CPU goes: run a command (default `make test`) and attribute the machine's
CPU to the processes it started, by kind (flow runs on a worker, Prefect servers, `conveyor`
commands, the pytest workers, browsers...) and by the test that started them.

The suite is CPU-bound on 2 cores, so its time is its CPU divided by the cores. `time` sees only
the processes it waits for, and a census at process exit misses every server stopped by a signal.
This samples every process with psutil twice a second instead, so servers and detached services
count too; a process that lives less than one interval is missed, and the coverage line says how
much of the machine's busy time the census explains.

Usage: benchmarks/suite_census.py [--out benchmarks/results/suite_census.json] [-- command ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402

# (kind, pattern on the command line), first match wins.
KINDS = (
    ("flow run on a worker (python -m prefect.engine)", re.compile(r"-m prefect\.engine\b")),
    ("Prefect temporary server (harness or a command's)", re.compile(r"uvicorn .*prefect\.server\.api\.server")),
    ("Prefect server of a stack", re.compile(r"prefect .*server start")),
    ("Prefect worker", re.compile(r"prefect .*worker start")),
    ("prefect deploy", re.compile(r"prefect .*deploy")),
    ("MLflow server", re.compile(r"mlflow.* server\b|mlflow\.server|uvicorn .*mlflow")),
    ("Dask scheduler and workers", re.compile(r"dask (scheduler|worker)|spawn_main")),
    ("pytest and its xdist workers", re.compile(r"pytest|exec\(eval\(sys\.stdin")),
    ("browser (chromium, playwright)", re.compile(r"chrom|playwright")),
    ("PostgreSQL", re.compile(r"^postgres")),
    ("SeaweedFS", re.compile(r"\bweed\b")),
)


def kind_of(command: str) -> str:
    if match := re.search(r"bin/conveyor (\w+)", command):
        return f"conveyor {match.group(1)}"
    return next((kind for kind, pattern in KINDS if pattern.search(command)), "other")


class Sampler(threading.Thread):
    """Every process seen, keyed by (pid, start time): its command, latest CPU seconds and the
    test that started it (PYTEST_CURRENT_TEST in its environment, inherited from pytest)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.seen: dict[tuple[int, float], dict[str, Any]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        for process in psutil.process_iter(["pid", "ppid", "name", "create_time", "cpu_times"]):
            info = process.info
            if info["cpu_times"] is None:
                continue
            key = (info["pid"], info["create_time"])
            cpu = info["cpu_times"].user + info["cpu_times"].system
            if key in self.seen:
                self.seen[key]["cpu"] = cpu
                continue
            try:
                command = " ".join(process.cmdline()) or process.name()
                test = process.environ().get("PYTEST_CURRENT_TEST", "")
            except (psutil.Error, OSError):
                command, test = process.info.get("name") or "?", ""
            self.seen[key] = {
                "command": command[:300],
                "cpu": cpu,
                "test": test,
                "pid": info["pid"],
                "ppid": info["ppid"],
            }


def busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "suite_census.json"))
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("command", nargs="*", default=["make", "test"])
    args = parser.parse_args()

    sampler = Sampler(args.interval)
    sampler.sample()
    before = set(sampler.seen)  # what ran before the command is not the suite's
    busy, started = busy_seconds(), time.time()
    sampler.start()
    command = subprocess.Popen(args.command)
    code = command.wait()
    sampler.stopped.set()
    sampler.join()
    wall, machine = time.time() - started, busy_seconds() - busy

    # The command's descendants, by the parent each process had when first seen (a server that
    # detaches is seen while its starter lives); anything else that started meanwhile is apart.
    new = [p for key, p in sampler.seen.items() if key not in before]
    family, grew = {command.pid}, True
    while grew:
        size = len(family)
        family |= {p["pid"] for p in new if p["ppid"] in family}
        grew = len(family) > size
    mine = [p for p in new if p["pid"] in family]
    others = sum(p["cpu"] for p in new if p["pid"] not in family)
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_module: dict[str, float] = defaultdict(float)
    for process in mine:
        kind = kind_of(process["command"])
        by_kind[kind][0] += 1
        by_kind[kind][1] += process["cpu"]
        module = process["test"].split("::")[0] or "(outside any test)"
        if not kind.startswith("pytest"):
            by_module[module] += process["cpu"]
    counted = sum(cpu for _, cpu in by_kind.values())
    result = {
        "command": args.command,
        "exit_code": code,
        "wall_seconds": round(wall, 1),
        "cores": psutil.cpu_count(),
        "machine_busy_cpu_seconds": round(machine, 1),
        "machine_busy_share": round(machine / (wall * (psutil.cpu_count() or 1)), 3),
        "counted_cpu_seconds": round(counted, 1),
        "other_new_processes_cpu_seconds": round(others, 1),
        "by_kind": {
            kind: {"processes": int(n), "cpu_seconds": round(cpu, 1)}
            for kind, (n, cpu) in sorted(by_kind.items(), key=lambda item: -item[1][1])
        },
        "child_processes_by_test_module": {
            module: round(cpu, 1) for module, cpu in sorted(by_module.items(), key=lambda item: -item[1])[:25]
        },
    }
    print(f"{wall:.0f} s wall; machine busy {machine:.0f} CPU-s ({result['machine_busy_share']:.0%} of the cores)")
    print(f"counted in processes the command started: {counted:.0f} CPU-s; other new processes: {others:.0f} CPU-s")
    for kind, entry in result["by_kind"].items():
        print(f"{entry['cpu_seconds']:8.1f} CPU-s {entry['processes']:5d} processes  {kind}")
    write_result(args.out, result)
    sys.exit(code)


if __name__ == "__main__":
    main()
