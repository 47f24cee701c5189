"""The fleet's floor on threads: the same small HistGradientBoosting fits one after another and on
two threads, in one process with one OpenMP thread (as a segment fan-out runs them).

A segment's fit (about 1,600 training rows) spends most of its time in Python between the short
Cython calls that release the GIL, so two threads mostly take turns. This measures what that
costs, wall and CPU, with no tracking at all: the floor under the fleet's thread-pool ratio.
Not in the README's table (no goal of its own); alternating pairs, medians.

Usage: OMP_NUM_THREADS=1 benchmarks/bench_gil.py [--fits 24] [--pairs 3] [--out benchmarks/results/gil.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import pair_summary, paired_runs, write_result  # noqa: E402


def fit(data: tuple[np.ndarray, np.ndarray]) -> None:
    HistGradientBoostingClassifier(random_state=0).fit(*data)


def timed(run: Callable[[], None]) -> Callable[[], tuple[float, float]]:
    """`run` measured: its wall and this process's CPU seconds."""

    def measured() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - wall, time.process_time() - cpu

    return measured


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fits", type=int, default=24)
    parser.add_argument("--rows", type=int, default=1600)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gil.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = [
        (rng.normal(size=(args.rows, 20)).astype("float32"), rng.integers(0, 2, args.rows)) for _ in range(args.fits)
    ]
    fit(data[0])  # warm: imports, first-call costs

    def sequential() -> None:
        for one in data:
            fit(one)

    def threads() -> None:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(fit, data))

    runs = paired_runs({"sequential": timed(sequential), "two_threads": timed(threads)}, args.pairs)
    summary = pair_summary(runs, ("wall", "cpu"))
    one, two = summary["medians"]["sequential"], summary["medians"]["two_threads"]
    result = {
        "fits": args.fits,
        "rows": args.rows,
        "pairs": args.pairs,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()),
        **summary,
        "wall_ratio": round(two["wall"] / one["wall"], 2),
        "cpu_ratio": round(two["cpu"] / one["cpu"], 2),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
