"""The embedded mode's fixed cost per command: `conveyor train` (no PREFECT_API_URL, so a temporary
Prefect server per command) against benchmarks/plain_train.py on the same data and contract.

Each pair runs both commands back to back (alternating which goes first) on a fresh project and an
empty MLflow store. "steady": Prefect's home kept between runs (warmed once, untimed); "first": a
new Prefect home each run (its database created and migrated). Wall and CPU (user + system of the
command and everything it started) are medians over --pairs pairs.
Usage: benchmarks/bench_embedded.py [--rows 200000] [--pairs 5] [--modes steady,first]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import machine, write_result  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "embedded"
BIN = Path(sys.executable).parent
GOAL_S = 3.0


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of a command and its waited-for descendants."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


# `conveyor train` with its temporary server started only when the flow is about to run (after the
# imports), as it was before the start overlapped them.
SEQUENTIAL = (
    "import sys, conveyor.temporary_api as t; t.begin_temporary_api = lambda: None; "
    "from app.cli import main; sys.argv = ['conveyor', 'train', 'bench']; main()"
)


def conveyor(data: Path, prefect_home: Path, sequential: bool = False) -> tuple[float, float]:
    from benchmarks.bench_training import base_env, prepare

    home = prepare(data, "conveyor")
    # A loaded machine can take more than Prefect's default 20 s to start the server: a slow start
    # is measured, not failed.
    env = base_env(home) | {"PREFECT_HOME": str(prefect_home)}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"
    command = [sys.executable, "-c", SEQUENTIAL] if sequential else [str(BIN / "conveyor"), "train", "bench"]
    return run(command, env, home)


def plain(data: Path) -> tuple[float, float]:
    from benchmarks.bench_training import base_env, plain_command, prepare

    home = prepare(data, "plain")
    return run(plain_command(home), base_env(home), home)


def measure(data: Path, mode: str, pairs: int, compare: bool) -> dict[str, Any]:
    kept = WORK / "prefect-home-kept"
    if mode == "steady":
        shutil.rmtree(kept, ignore_errors=True)
        conveyor(data, kept)  # creates and migrates Prefect's database once, untimed
    sides: dict[str, list[tuple[float, float]]] = {}
    for name in ["plain", "conveyor", "sequential"] if compare else ["plain", "conveyor"]:
        sides[name] = []
    for i in range(pairs):
        fresh = WORK / f"prefect-home-{i}"
        shutil.rmtree(fresh, ignore_errors=True)
        home = kept if mode == "steady" else fresh
        order = list(sides) if i % 2 else list(reversed(sides))
        for side in order:
            sides[side].append(plain(data) if side == "plain" else conveyor(data, home, side == "sequential"))
        shutil.rmtree(fresh, ignore_errors=True)
        c, p = sides["conveyor"][-1], sides["plain"][-1]
        print(
            f"{mode} pair {i + 1}: conveyor {c[0]:.1f} s ({c[1]:.1f} CPU), plain {p[0]:.1f} s ({p[1]:.1f} CPU)"
            + "".join(f", sequential {w:.1f} s ({u:.1f} CPU)" for w, u in sides.get("sequential", [])[-1:]),
            file=sys.stderr,
        )
    wall = {side: statistics.median(w for w, _ in values) for side, values in sides.items()}
    cpu = {side: statistics.median(c for _, c in values) for side, values in sides.items()}
    sequential: dict[str, Any] = {}
    if compare:
        sequential = {
            "sequential_over_wall_s": wall["sequential"] - wall["plain"],
            "sequential_over_cpu_s": cpu["sequential"] - cpu["plain"],
        }
    return sequential | {
        "conveyor_wall_s": wall["conveyor"],
        "plain_wall_s": wall["plain"],
        "over_wall_s": wall["conveyor"] - wall["plain"],
        "conveyor_cpu_s": cpu["conveyor"],
        "plain_cpu_s": cpu["plain"],
        "over_cpu_s": cpu["conveyor"] - cpu["plain"],
        "all": {side: [[round(w, 2), round(c, 2)] for w, c in values] for side, values in sides.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--modes", default="steady,first")
    parser.add_argument(
        "--compare", action="store_true", help="also time the command without the overlapped server start"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embedded.json"))
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)
    from benchmarks.bench_training import draft, make_frame, write_csv

    load = os.getloadavg()[0]
    data = WORK / "data.csv"
    write_csv(make_frame(args.rows, seed=2), data)
    draft(data)
    figures = {mode: measure(data, mode, args.pairs, args.compare) for mode in args.modes.split(",")}
    goals = {
        f"embedded_over_plain_{kind}_s ({mode}, {args.rows} rows)": {
            "value": round(figure[f"over_{kind}_s"], 2),
            "goal": f"<= {GOAL_S}",
            "met": figure[f"over_{kind}_s"] <= GOAL_S,
        }
        for mode, figure in figures.items()
        for kind in ("wall", "cpu")
    }
    result = {
        "benchmark": "embedded",
        "baseline": "benchmarks/plain_train.py (same data, contract, steps and libraries, no Prefect)",
        "pairs": args.pairs,
        "rows": args.rows,
        "columns": 20,
        "figures": figures,
        "goals": goals,
        "machine": machine(load),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
