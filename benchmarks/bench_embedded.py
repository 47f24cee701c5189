"""The embedded mode's fixed cost per command: `conveyor train` (no PREFECT_API_URL, so a temporary
Prefect server per command) against benchmarks/plain_train.py on the same data and contract.

Each pair runs both commands back to back (alternating which goes first) on a fresh project and an
empty MLflow store. "steady": Prefect's home kept between runs (warmed once, untimed); "first": a
new Prefect home each run (its database a copy of the template `make install` builds;
`--unseeded` also times the command with no copy, its server running Prefect's migrations). Wall
and CPU (user + system of the command and everything it started) are medians over --pairs pairs.
Usage: benchmarks/bench_embedded.py [--rows 200000] [--pairs 5] [--modes steady,first] [--unseeded]
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


TRAIN = "from app.cli import main; sys.argv = ['conveyor', 'train', 'bench']; main()"
VARIANTS = {
    # Its temporary server started only when the flow is about to run (after the imports), as it
    # was before the start overlapped them.
    "sequential": "import sys, conveyor.temporary_api as t; t.begin_temporary_api = lambda: None; " + TRAIN,
    # A new Prefect database created by Prefect's migrations, not copied from the template.
    "unseeded": "import sys, conveyor.prefect_database as d; d.seed = lambda *args, **kwargs: False; " + TRAIN,
}


def conveyor(data: Path, prefect_home: Path, variant: str | None = None) -> tuple[float, float]:
    from benchmarks.bench_training import base_env, prepare

    home = prepare(data, "conveyor")
    # A loaded machine can take more than Prefect's default 20 s to start the server: a slow start
    # is measured, not failed.
    env = base_env(home) | {"PREFECT_HOME": str(prefect_home)}
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"
    command = [sys.executable, "-c", VARIANTS[variant]] if variant else [str(BIN / "conveyor"), "train", "bench"]
    return run(command, env, home)


def plain(data: Path) -> tuple[float, float]:
    from benchmarks.bench_training import base_env, plain_command, prepare

    home = prepare(data, "plain")
    return run(plain_command(home), base_env(home), home)


def measure(data: Path, mode: str, pairs: int, variants: list[str]) -> dict[str, Any]:
    kept = WORK / "prefect-home-kept"
    if mode == "steady":
        shutil.rmtree(kept, ignore_errors=True)
        conveyor(data, kept)  # creates Prefect's database once, untimed
    sides: dict[str, list[tuple[float, float]]] = {name: [] for name in ["plain", "conveyor", *variants]}
    for i in range(pairs):
        order = list(sides) if i % 2 else list(reversed(sides))
        for side in order:
            fresh = WORK / f"prefect-home-{i}-{side}"
            shutil.rmtree(fresh, ignore_errors=True)
            home = kept if mode == "steady" else fresh
            variant = None if side == "conveyor" else side
            sides[side].append(plain(data) if side == "plain" else conveyor(data, home, variant))
            shutil.rmtree(fresh, ignore_errors=True)
        last = ", ".join(f"{side} {v[-1][0]:.1f} s ({v[-1][1]:.1f} CPU)" for side, v in sides.items())
        print(f"{mode} pair {i + 1}: {last}", file=sys.stderr)
    wall = {side: statistics.median(w for w, _ in values) for side, values in sides.items()}
    cpu = {side: statistics.median(c for _, c in values) for side, values in sides.items()}
    others: dict[str, Any] = {}
    for variant in variants:
        others[f"{variant}_over_wall_s"] = wall[variant] - wall["plain"]
        others[f"{variant}_over_cpu_s"] = cpu[variant] - cpu["plain"]
    return others | {
        "conveyor_wall_s": wall["conveyor"],
        "plain_wall_s": wall["plain"],
        "over_wall_s": wall["conveyor"] - wall["plain"],
        "conveyor_cpu_s": cpu["conveyor"],
        "plain_cpu_s": cpu["plain"],
        "over_cpu_s": cpu["conveyor"] - cpu["plain"],
        "all": {side: [[round(w, 2), round(c, 2)] for w, c in values] for side, values in sides.items()},
    }


def goals_of(figures: dict[str, Any], rows: int) -> dict[str, Any]:
    """The goal rows; a variant's figures beside them, for comparison."""
    goals: dict[str, Any] = {}
    for mode, figure in figures.items():
        for kind in ("wall", "cpu"):
            over = figure[f"over_{kind}_s"]
            goals[f"embedded_over_plain_{kind}_s ({mode}, {rows} rows)"] = {
                "value": round(over, 2),
                "goal": f"<= {GOAL_S}",
                "met": over <= GOAL_S,
            }
            for variant in VARIANTS:
                if f"{variant}_over_{kind}_s" in figure:
                    goals[f"embedded_over_plain_{kind}_s ({mode}, {variant}, {rows} rows)"] = {
                        "value": round(figure[f"{variant}_over_{kind}_s"], 2),
                        "goal": "(for comparison)",
                        "met": None,
                    }
    return goals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--modes", default="steady,first")
    parser.add_argument(
        "--compare", action="store_true", help="also time the command without the overlapped server start"
    )
    parser.add_argument(
        "--unseeded", action="store_true", help="also time a first run whose server migrates a new database"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embedded.json"))
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)
    from benchmarks.bench_training import draft, make_frame, write_csv

    load = os.getloadavg()[0]
    data = WORK / "data.csv"
    write_csv(make_frame(args.rows, seed=2), data)
    draft(data)
    figures = {}
    for mode in args.modes.split(","):
        variants = ["sequential"] if args.compare else []
        variants += ["unseeded"] if args.unseeded and mode == "first" else []
        figures[mode] = measure(data, mode, args.pairs, variants)
    goals = goals_of(figures, args.rows)
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
