"""Stack benchmark: seconds from `conveyor up` to a healthy stack, and its resident memory idle.

Runs the real CLI (`python -m app.commands_stack up`, the commands `conveyor up` runs) in a copy
of the project under benchmarks/.work/stack, on free ports, SQLite profile:

- cold: `up` on an empty state folder (database migrations, `prefect deploy --all`, the per-spec
  deployments), each in a fresh copy;
- warm: `up` again after `down` (stores and deployments exist: what a daily `make up` costs);
- with --unseeded, also a cold `up` whose Prefect server creates its database with Prefect's
  migrations instead of starting from a copy of the empty one (conveyor/prefect_database.py),
  alternating with the cold `up` in each repeat.

Memory: with the stack idle (no flow run), the sum of VmRSS over every process tree the stack
started (prefect server; mlflow launcher and its uvicorn worker; the Prefect worker), read with
psutil. PSS (shared pages counted once) is reported beside it. CPU seconds each service spent
starting are reported too: on a 2-core machine the sum, not the parallelism, bounds the time.

Results: benchmarks/results/stack.json, with a goals section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / ".work" / "stack"
COPIED = ("app", "conveyor", "flows", "tasks", "pipelines", "prefect.yaml", "pyproject.toml")
GOAL_SECONDS = 20.0
GOAL_RSS_BYTES = 1.2e9

sys.path.insert(0, str(REPO))
from app.stack.processes import process_tree, rss_bytes  # noqa: E402
from benchmarks.common import clean_env, free_port  # noqa: E402


def fresh_project(name: str) -> Path:
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for item in COPIED:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / item)
    return root


def environment(root: Path) -> dict[str, str]:
    env = clean_env()
    env.update(
        CONVEYOR_HOME=str(root),
        CONVEYOR_PREFECT_PORT=str(free_port()),
        CONVEYOR_MLFLOW_PORT=str(free_port()),
        PREFECT_HOME=str(root / ".conveyor" / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


# `conveyor <args>` with no copy of Prefect's empty database: its server migrates a new one.
UNSEEDED = (
    "import runpy, sys, conveyor.prefect_database as d; d.seed = lambda *args, **kwargs: False; "
    "sys.argv[0] = 'conveyor'; runpy.run_module('app.commands_stack', run_name='__main__')"
)


def cli(root: Path, env: dict[str, str], *args: str, unseeded: bool = False) -> float:
    """Run a stack command; return its wall seconds (it exits once everything is healthy)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *(("-c", UNSEEDED) if unseeded else ("-m", "app.commands_stack")), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"`conveyor {' '.join(args)}` failed: {result.stderr.strip()}")
    return seconds


def unseeded_cold_up(repeat: int) -> float:
    """A cold `up` whose Prefect server migrates a new database; stopped and removed after."""
    root = fresh_project(f"unseeded-{repeat}")
    env = environment(root)
    try:
        return cli(root, env, "up", unseeded=True)
    finally:
        cli(root, env, "down")
        shutil.rmtree(root, ignore_errors=True)


def stack_state(root: Path) -> dict[str, Any]:
    return json.loads((root / ".conveyor" / "stack.json").read_text())


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size: shared pages counted once across the processes that share them."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_full_info().pss
    return total


def per_service(root: Path, measure: Any) -> dict[str, float]:
    return {name: measure(process_tree(service["pid"])) for name, service in stack_state(root)["services"].items()}


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before memory")
    parser.add_argument("--unseeded", action="store_true", help="also time a cold up that migrates Prefect's database")
    parser.add_argument("--output", type=Path, default=RESULTS / "stack.json")
    args = parser.parse_args(argv)

    load_before = load_average()
    cold: list[float] = []
    unseeded: list[float] = []
    warm: list[float] = []
    warm_phases: list[dict[str, float]] = []
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    pss: dict[str, float] = {}
    for repeat in range(args.repeats):
        if args.unseeded and repeat % 2 == 0:
            unseeded.append(unseeded_cold_up(repeat))
        root = fresh_project(f"run-{repeat}")
        env = environment(root)
        try:
            cold.append(cli(root, env, "up"))
            cli(root, env, "down")
            warm.append(cli(root, env, "up"))
            warm_phases.append(stack_state(root)["timings"])
            if repeat == 0:
                cpu = per_service(root, lambda pids: round(sum(map(cpu_seconds, pids)), 2))
                time.sleep(args.settle)
                rss = per_service(root, rss_bytes)
                pss = per_service(root, pss_bytes)
        finally:
            subprocess.run(
                [sys.executable, "-m", "app.commands_stack", "down"],
                cwd=root,
                env=env,
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(root, ignore_errors=True)
        if args.unseeded and repeat % 2 == 1:
            unseeded.append(unseeded_cold_up(repeat))

    unseeded_median = round(statistics.median(unseeded), 2) if unseeded else None
    results: dict[str, Any] = {
        "benchmark": "stack: `conveyor up` to healthy, and idle resident memory",
        "profile": "sqlite",
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "method": (
            "wall seconds of the `up` command, which returns once the Prefect API and the MLflow "
            "server answer their health endpoints, the worker is ONLINE in the pool and every "
            "deployment exists; cold = empty state folder, warm = after `down`. Memory: sum of "
            f"VmRSS over the stack's process trees after {args.settle:g} s idle; PSS beside it. "
            "Medians over repeats; other engineers' jobs share the CPUs (see load averages)."
        ),
        "up_seconds": {
            "cold": [round(s, 2) for s in cold],
            "cold_median": round(statistics.median(cold), 2),
            "warm": [round(s, 2) for s in warm],
            "warm_median": round(statistics.median(warm), 2),
            **(
                {"cold_unseeded": [round(s, 2) for s in unseeded], "cold_unseeded_median": unseeded_median}
                if unseeded
                else {}
            ),
        },
        "warm_phases_seconds": warm_phases,
        "cpu_seconds_at_ready": cpu,
        "idle_rss_bytes": {**rss, "total": sum(rss.values())},
        "idle_pss_bytes": {**pss, "total": sum(pss.values())},
    }
    total_rss = results["idle_rss_bytes"]["total"]
    results["goals"] = {
        "up_warm_under_20s": {
            "goal_seconds": GOAL_SECONDS,
            "median_seconds": results["up_seconds"]["warm_median"],
            "met": results["up_seconds"]["warm_median"] < GOAL_SECONDS,
        },
        "up_cold_under_20s": {
            "goal_seconds": GOAL_SECONDS,
            "median_seconds": results["up_seconds"]["cold_median"],
            "met": results["up_seconds"]["cold_median"] < GOAL_SECONDS,
        },
        **(
            {
                "up_cold_without_the_copy": {
                    "goal": "(for comparison: Prefect migrates a new database)",
                    "median_seconds": unseeded_median,
                    "met": None,
                }
            }
            if unseeded
            else {}
        ),
        "idle_rss_under_1_2_gb": {
            "goal_bytes": GOAL_RSS_BYTES,
            "rss_bytes": total_rss,
            "met": total_rss < GOAL_RSS_BYTES,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"up_seconds": results["up_seconds"], "goals": results["goals"]}, indent=2))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
