"""Monitoring benchmark: Conveyor's profile-based drift check against Evidently's DataDriftPreset.

    .venv/bin/python benchmarks/bench_monitoring.py [--rows N] [--repeats R] [--skip-evidently]

Writes a reference and a current frame of N rows x 20 columns (15 numeric, 5 categorical, five
drifted by construction, two nudged below any threshold) to Parquet under benchmarks/.work/,
then measures each side in fresh processes, median of `--repeats`:

- conveyor build: read the reference Parquet, `build_profile` (done once per model, at training)
- conveyor compare: read the profile JSON and the current Parquet, `compare_to_profile`
- evidently: read both Parquet files, `Report([DataDriftPreset()]).run(...)`, in an isolated
  environment (`uv run --no-project --with 'evidently==0.7.*' --with 'pandas<3'`): Evidently
  does not import with pandas 3.

Seconds are the timed call alone (imports and Parquet reads are reported apart); peak memory is
the worker process's own high-water RSS (`VmHWM`). Conveyor and Evidently runs alternate. Results
go to benchmarks/results/monitoring.json (other row counts to monitoring-<rows>.json, so a quick
run never overwrites the full one).

This file is also the worker: `--worker build|compare|evidently` runs one measurement and prints
one JSON line. Its top level imports the standard library only, so the Evidently environment
can run it without the project installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "monitoring"
RESULTS = ROOT / "benchmarks" / "results"
FULL_ROWS = 1_000_000
GENERATOR_VERSION = 2
EVIDENTLY = ["uv", "run", "--no-project", "--with", "evidently==0.7.*", "--with", "pandas<3"]

NUMERIC = [f"num_{i:02d}" for i in range(15)]
CATEGORICAL = [f"cat_{i:02d}" for i in range(5)]
# Drifted by construction, each one plainly: a mean shift of one std, a doubled spread, an
# exponential whose mean doubles, a reversed category mix, and a category that did not exist in
# the reference. (A milder drift, an exponential mean x1.5, has PSI 0.14: below Conveyor's 0.2,
# while Evidently's normed Wasserstein of 0.5 is far above its 0.1. The per-column scores of both
# are in the results for such comparisons.)
DRIFTED = ["num_00", "num_01", "num_02", "cat_00", "cat_01"]
# Nudged well below any threshold: neither tool should flag these.
NUDGED = ["num_03", "cat_02"]

GOALS = {"speedup": 20.0, "memory_ratio": 0.5}


# --------------------------------------------------------------------------- data


def make_frames(rows: int, seed: int = 7) -> tuple[Any, Any]:
    """Reference and current frames with the drifts above; everything else from one law."""
    import numpy as np
    import pandas as pd

    def frame(rng: Any, current: bool) -> Any:
        data: dict[str, Any] = {}
        data["num_00"] = rng.normal(1.0 if current else 0.0, 1.0, rows)
        data["num_01"] = rng.normal(0.0, 2.0 if current else 1.0, rows)
        data["num_02"] = rng.exponential(2.0 if current else 1.0, rows)
        data["num_03"] = rng.normal(0.05 if current else 0.0, 1.0, rows)
        data["num_04"] = rng.normal(50.0, 10.0, rows)
        data["num_04"][rng.random(rows) < 0.05] = np.nan
        data["num_05"] = rng.lognormal(3.0, 1.0, rows)
        data["num_06"] = rng.uniform(-1.0, 1.0, rows)
        data["num_07"] = rng.poisson(3.0, rows).astype("float64")
        data["num_08"] = rng.gamma(2.0, 2.0, rows)
        data["num_09"] = rng.integers(18, 90, rows).astype("float64")
        base = rng.normal(0.0, 1.0, rows)
        data["num_10"] = base + rng.normal(0.0, 0.3, rows)
        data["num_11"] = base * 2 + rng.normal(0.0, 1.0, rows)
        data["num_12"] = rng.beta(2.0, 5.0, rows)
        data["num_13"] = rng.standard_t(5, rows)
        data["num_14"] = rng.binomial(1, 0.3, rows).astype("float64")

        five = np.array(["a", "b", "c", "d", "e"], dtype=object)
        mix = [0.05, 0.1, 0.15, 0.3, 0.4] if current else [0.4, 0.3, 0.15, 0.1, 0.05]
        data["cat_00"] = five[rng.choice(5, rows, p=mix)]
        ten = np.array([f"k{i}" for i in range(10)], dtype=object)
        cat_01 = ten[rng.integers(0, 10, rows)]
        if current:
            cat_01[rng.random(rows) < 0.25] = "brand_new"
        data["cat_01"] = cat_01
        three = np.array(["x", "y", "z"], dtype=object)
        data["cat_02"] = three[rng.choice(3, rows, p=[0.48, 0.31, 0.21] if current else [0.5, 0.3, 0.2])]
        fifty = np.array([f"s{i:02d}" for i in range(50)], dtype=object)
        cat_03 = fifty[rng.integers(0, 50, rows)]
        cat_03[rng.random(rows) < 0.05] = None
        data["cat_03"] = cat_03
        # 200 categories with a long tail: more than the profile keeps (50 + "__other__").
        weights = 1.0 / np.arange(1, 201)
        many = np.array([f"m{i:03d}" for i in range(200)], dtype=object)
        data["cat_04"] = many[rng.choice(200, rows, p=weights / weights.sum())]
        return pd.DataFrame(data)

    return frame(np.random.default_rng(seed), False), frame(np.random.default_rng(seed + 1), True)


def write_frames(rows: int) -> tuple[Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    reference = WORK / f"reference-{rows}-v{GENERATOR_VERSION}.parquet"
    current = WORK / f"current-{rows}-v{GENERATOR_VERSION}.parquet"
    if not (reference.exists() and current.exists()):
        ref, cur = make_frames(rows)
        ref.to_parquet(reference, index=False)
        cur.to_parquet(current, index=False)
    return reference, current


# --------------------------------------------------------------------------- workers


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_rss_mb() -> float:
    """This process's high-water RSS.

    Not ru_maxrss: Linux keeps it across fork and exec, so a worker would report its parent's
    peak (here the driver's, after generating the frames) whenever that is higher.
    """
    return _status_mb("VmHWM")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


class _Clock:
    """Wall and CPU seconds of a block (CPU summed over the process's threads)."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def worker_build(reference: Path, profile_path: Path) -> dict[str, Any]:
    import pandas as pd

    from tasks.drift import build_profile, save_profile

    after_imports = _rss_mb()
    with _Clock() as read:
        frame = pd.read_parquet(reference)
    with _Clock() as call:
        profile = build_profile(frame, NUMERIC, CATEGORICAL, None, {})
    save_profile(profile, profile_path)
    return {
        "seconds": call.wall,
        "cpu_seconds": call.cpu,
        "read_seconds": read.wall,
        "rss_after_imports_mb": after_imports,
        "peak_rss_mb": _peak_rss_mb(),
        "profile_bytes": profile_path.stat().st_size,
    }


def worker_compare(current: Path, profile_path: Path) -> dict[str, Any]:
    import pandas as pd
    import sklearn.ensemble  # noqa: F401  (imported before the clock, like Evidently's imports)

    from tasks.drift import compare_to_profile, load_profile

    after_imports = _rss_mb()
    with _Clock() as read:
        profile = load_profile(profile_path)
        frame = pd.read_parquet(current)
    with _Clock() as call:
        report = compare_to_profile(profile, frame)
        report.model_dump_json()
    return {
        "seconds": call.wall,
        "cpu_seconds": call.cpu,
        "read_seconds": read.wall,
        "rss_after_imports_mb": after_imports,
        "peak_rss_mb": _peak_rss_mb(),
        "flagged": sorted(report.drifted_features),
        "psi": {f.name: round(f.psi, 4) for f in report.features if f.psi is not None},
        "domain_auc": report.domain.auc if report.domain else None,
        "domain_top_features": list(report.domain.importances)[:5] if report.domain else [],
        "drift_detected": report.drift_detected,
    }


def worker_evidently(reference: Path, current: Path) -> dict[str, Any]:
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    after_imports = _rss_mb()
    with _Clock() as read:
        ref = pd.read_parquet(reference)
        cur = pd.read_parquet(current)
    with _Clock() as call:
        definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(cur, data_definition=definition),
            reference_data=Dataset.from_pandas(ref, data_definition=definition),
        )
        result = snapshot.dict()
    flagged, scores, methods = [], {}, {}
    for metric in result["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method, value, threshold = config["method"], float(metric["value"]), config["threshold"]
        # p-value tests drift below their threshold; distances at or above it.
        drifted = value < threshold if "p_value" in method else value >= threshold
        scores[config["column"]] = round(value, 4)
        methods[config["column"]] = f"{method} (threshold {threshold})"
        if drifted:
            flagged.append(config["column"])
    return {
        "version": evidently.__version__,
        "pandas": pd.__version__,
        "seconds": call.wall,
        "cpu_seconds": call.cpu,
        "read_seconds": read.wall,
        "rss_after_imports_mb": after_imports,
        "peak_rss_mb": _peak_rss_mb(),
        "flagged": sorted(flagged),
        "scores": scores,
        "methods": methods,
    }


# --------------------------------------------------------------------------- driver


def run_worker(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    process_seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:8])} ... exited {done.returncode}:\n{tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        "seconds",
        "cpu_seconds",
        "read_seconds",
        "process_seconds",
        "peak_rss_mb",
        "rss_after_imports_mb",
    ]
    summary = {key: round(statistics.median(r[key] for r in runs), 3) for key in keys}
    extras = {k: v for k, v in runs[0].items() if k not in keys}
    return {**summary, **extras, "runs": [{k: round(r[k], 3) for k in keys} for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows in each frame")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="fresh processes per measurement (3 at 1M rows, else 1)",
    )
    parser.add_argument("--skip-evidently", action="store_true", help="measure Conveyor only")
    parser.add_argument("--output", type=Path, default=None, help="results JSON path")
    parser.add_argument("--worker", choices=["build", "compare", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--current", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.rows >= FULL_ROWS else 1

    if args.worker == "build":
        print(json.dumps(worker_build(args.reference, args.profile)))
        return 0
    if args.worker == "compare":
        print(json.dumps(worker_compare(args.current, args.profile)))
        return 0
    if args.worker == "evidently":
        print(json.dumps(worker_evidently(args.reference, args.current)))
        return 0

    # Same threads for both sides, and nothing else the machine happens to have configured.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    isolated = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    print(f"writing {args.rows:,} + {args.rows:,} rows x 20 columns under {WORK} ...", flush=True)
    reference, current = write_frames(args.rows)
    profile = WORK / f"profile-{args.rows}.json"
    this = str(Path(__file__).resolve())
    paths = ["--reference", str(reference), "--current", str(current), "--profile", str(profile)]

    results: dict[str, Any] = {
        "benchmark": "monitoring: drift of a current batch against the training reference",
        "rows_reference": args.rows,
        "rows_current": args.rows,
        "columns": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)},
        "drifted_by_construction": DRIFTED,
        "nudged_below_thresholds": NUDGED,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "omp_num_threads": env["OMP_NUM_THREADS"],
        },
        "method": (
            "seconds = the timed call only (build_profile; compare_to_profile; Evidently's "
            "Dataset.from_pandas + Report.run + snapshot.dict()), median of fresh processes. "
            "Conveyor's compare reads the profile JSON and the current frame; Evidently reads "
            "both frames. Conveyor and Evidently runs alternate. peak_rss_mb = the worker's VmHWM "
            "(its own high-water RSS), imports and frames included."
        ),
    }
    build = []
    for i in range(args.repeats):
        build.append(run_worker([sys.executable, this, "--worker", "build", *paths], env))
        print(f"conveyor build run {i + 1}: {build[-1]['seconds']:.2f} s", flush=True)
    results["conveyor_build"] = summarise(build)
    # Conveyor and Evidently runs alternate, so a change in machine load hits both alike.
    compare: list[dict[str, Any]] = []
    evidently: list[dict[str, Any]] = []
    failure = "--skip-evidently" if args.skip_evidently else None
    for i in range(args.repeats):
        compare.append(run_worker([sys.executable, this, "--worker", "compare", *paths], env))
        print(f"conveyor compare run {i + 1}: {compare[-1]['seconds']:.2f} s", flush=True)
        if failure:
            continue
        try:
            command = [*EVIDENTLY, "python", this, "--worker", "evidently", *paths]
            evidently.append(run_worker(command, isolated))
            print(f"evidently run {i + 1}: {evidently[-1]['seconds']:.2f} s", flush=True)
        except (OSError, RuntimeError) as exc:
            failure = str(exc)
    results["conveyor_compare"] = summarise(compare)
    if args.skip_evidently:
        results["evidently"] = {"skipped": failure}
    elif failure:
        results["evidently"] = {"error": failure}
    else:
        results["evidently"] = summarise(evidently)

    results["goals"] = goals(results)
    output = args.output or RESULTS / ("monitoring.json" if args.rows == FULL_ROWS else f"monitoring-{args.rows}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"goals": results["goals"]}, indent=2))
    print(f"results written to {output}")
    return 0


def goals(results: dict[str, Any]) -> dict[str, Any]:
    ours = results["conveyor_compare"]
    theirs = results["evidently"]
    if "seconds" not in theirs:
        reason = theirs.get("error") or theirs.get("skipped")
        return {"measured": False, "reason": reason}
    speedup = theirs["seconds"] / ours["seconds"]
    cpu_speedup = theirs["cpu_seconds"] / ours["cpu_seconds"]
    memory_ratio = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    same = set(ours["flagged"]) == set(theirs["flagged"])
    return {
        "measured": True,
        "speedup": {
            "goal": f">= {GOALS['speedup']:g}x",
            "measured": round(speedup, 1),
            "cpu_time_ratio": round(cpu_speedup, 1),
            "met": speedup >= GOALS["speedup"],
        },
        "peak_memory": {
            "goal": f"<= {GOALS['memory_ratio']:g} x Evidently's peak RSS",
            "measured": round(memory_ratio, 3),
            "met": memory_ratio <= GOALS["memory_ratio"],
        },
        "same_drifted_columns": {
            "goal": "both flag the same columns",
            "conveyor": ours["flagged"],
            "evidently": theirs["flagged"],
            "by_construction": sorted(DRIFTED),
            "met": same,
        },
        "all_met": speedup >= GOALS["speedup"] and memory_ratio <= GOALS["memory_ratio"] and same,
    }


if __name__ == "__main__":
    sys.exit(main())
