"""What the model card adds to a training run: bootstrap intervals and fairness per group.

For holdouts of 200 to 100,000 rows (binary, scores with ties; two groups plus missing values):
- `bootstrap_intervals` (200 resamples, every metric of every resample at once, at most 10,000 rows)
  against the plain loop it replaces: scikit-learn's metrics on each resample's drawn rows;
- `fairness_by_group` (fairlearn MetricFrame, one sensitive attribute).
Each figure is the median of --repeats runs; the plain loop runs once above 10,000 rows.
Usage: benchmarks/bench_card.py [--repeats 3] [--out benchmarks/results/card.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GOAL_S = 2.0  # the card's statistics must not be felt next to training
SIZES = (200, 2_000, 10_000, 100_000)


def case(rows: int) -> tuple[pd.Series, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(rows)
    p = np.round(rng.uniform(size=rows), 2)
    truth = pd.Series(np.where(rng.uniform(size=rows) < p, "yes", "no"))
    groups = rng.choice(np.array(["a", "b", None], dtype=object), size=rows, p=[0.5, 0.45, 0.05])
    return truth, np.column_stack([1 - p, p]), pd.DataFrame({"group": groups})


def plain_loop(truth: pd.Series, output: np.ndarray, seed: int, resamples: int = 200) -> None:
    from tasks.evaluation import metrics_from_predictions

    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        rows = rng.integers(0, len(truth), len(truth))
        metrics_from_predictions("binary", ["no", "yes"], truth.iloc[rows].reset_index(drop=True), output[rows])


def timed(call: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(repeats: int) -> list[dict[str, Any]]:
    from tasks.evaluation import bootstrap_intervals
    from tasks.fairness import fairness_by_group

    results = []
    for rows in SIZES:
        truth, output, groups = case(rows)
        bootstrap = timed(partial(bootstrap_intervals, "binary", ["no", "yes"], truth, output, seed=0), repeats)
        loop = timed(partial(plain_loop, truth, output, 0), 1 if rows > 10_000 else repeats)
        fairness = timed(partial(fairness_by_group, "binary", ["no", "yes"], truth, output, groups), repeats)
        results.append(
            {
                "holdout_rows": rows,
                "bootstrap_s": round(bootstrap, 3),
                "plain_loop_s": round(loop, 3),
                "speedup": round(loop / bootstrap, 1),
                "fairness_s": round(fairness, 3),
                "within_goal": bootstrap + fairness <= GOAL_S,
            }
        )
        print(results[-1], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "card.json")
    args = parser.parse_args()
    results = measure(args.repeats)
    args.out.write_text(json.dumps({"goal_s": GOAL_S, "resamples": 200, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
