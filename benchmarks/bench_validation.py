"""Validation benchmark: checking data against its drafted contract vs training the default model.

    .venv/bin/python benchmarks/bench_validation.py [--rows N] [--repeats R]

Builds a seeded frame of N rows x 20 columns (14 numeric, 4 categorical, a row id and a binary
target), drafts its contract, then measures in this one process, median of `--repeats`:

- validate: `validate_frame` against the drafted contract (a fresh ephemeral GX context, the GX
  suite and Conveyor's own checks: target, infinities, leakage, duplicates), as a training run does
- train: `fit_pipeline` for the default spec (preprocessing + HistGradientBoostingClassifier) on
  the training split, as a training run does; OMP_NUM_THREADS is left as the caller set it

Importing Great Expectations (once per process) and drafting are reported apart. Goal: validating
costs under 10% of training. Results go to benchmarks/results/validation.json (other row counts
to validation-<rows>.json, so a quick run never overwrites the full one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
FULL_ROWS = 1_000_000
GOAL_RATIO = 0.10


def make_frame(rows: int, seed: int = 0) -> Any:
    """14 numeric features (10 informative), 4 categorical ones that shift the odds, id, target."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(seed)
    X, y = make_classification(
        n_samples=rows, n_features=14, n_informative=10, n_redundant=2, flip_y=0.05,
        class_sep=0.8, random_state=seed,
    )  # fmt: skip
    frame = pd.DataFrame(X.round(5), columns=[f"num_{i:02d}" for i in range(14)])
    frame.insert(0, "row_id", np.arange(rows))
    logits = np.zeros(rows)
    for i, levels in enumerate((3, 8, 12, 40)):
        codes = rng.integers(0, levels, size=rows)
        effect = rng.normal(scale=0.6, size=levels)
        logits += effect[codes]
        frame[f"cat_{i}"] = (
            pd.Series([f"c{i}_{code:02d}" for code in range(levels)], dtype="str").take(codes).to_numpy()
        )
    flip = rng.random(rows) < 1 / (1 + np.exp(-logits)) * 0.3
    frame["label"] = np.where(y.astype(bool) ^ flip, "yes", "no")
    return frame


def measure(rows: int, repeats: int) -> dict[str, Any]:
    import pandas as pd

    from conveyor.spec import parse_spec
    from tasks.data import infer_task, split_frame

    frame = make_frame(rows)
    spec = parse_spec(
        {"name": "bench", "data": {"path": "bench.csv", "target": "label", "id_column": "row_id"}},
        str(ROOT / "benchmarks" / "bench.yaml"),
    )
    spec = spec.for_task(infer_task(frame["label"]))

    started = time.perf_counter()
    import great_expectations  # noqa: F401  (paid once per process; reported apart)

    gx_import = time.perf_counter() - started
    from tasks.contracts import draft_contract, validate_frame
    from tasks.training import fit_pipeline

    started = time.perf_counter()
    suite = draft_contract(spec, frame)
    draft_seconds = time.perf_counter() - started

    validate_seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        report = validate_frame(frame, suite, spec, "bench.csv")
        validate_seconds.append(time.perf_counter() - started)
        if not report.success:
            raise SystemExit(f"the drafted contract refused its own data: {report.message()}")

    split = split_frame(spec, frame)
    train_seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fit_pipeline(spec, split.X_train, split.y_train)
        train_seconds.append(time.perf_counter() - started)

    validate = statistics.median(validate_seconds)
    train = statistics.median(train_seconds)
    ratio = validate / train
    return {
        "benchmark": "validation",
        "rows": rows,
        "columns": frame.shape[1],
        "train_rows": len(split.X_train),
        "repeats": repeats,
        "expectations": len(suite["expectations"]),
        "seconds": {
            "gx_import": round(gx_import, 3),
            "draft": round(draft_seconds, 3),
            "validate": [round(s, 3) for s in validate_seconds],
            "validate_median": round(validate, 3),
            "train": [round(s, 3) for s in train_seconds],
            "train_median": round(train, 3),
        },
        "ratio_validate_to_train": round(ratio, 4),
        "goals": {
            "validation_under_10pct_of_training": {
                "goal": f"< {GOAL_RATIO}",
                "value": round(ratio, 4),
                "met": ratio < GOAL_RATIO,
            }
        },
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "pandas": pd.__version__,
            "great_expectations": _version("great_expectations"),
            "scikit-learn": _version("scikit-learn"),
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows of the frame (default 1M)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side; the median counts")
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    result = measure(args.rows, args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "validation.json" if args.rows == FULL_ROWS else f"validation-{args.rows}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    seconds = result["seconds"]
    print(
        f"{args.rows} rows x {result['columns']} columns: "
        f"validate {seconds['validate_median']:.2f} s, "
        f"train {seconds['train_median']:.2f} s, ratio {result['ratio_validate_to_train']:.3f} "
        f"(goal < {GOAL_RATIO}); written to {RESULTS / name}"
    )


if __name__ == "__main__":
    main()
