"""Fleet benchmark (segment part): N segment models from one spec against a bare sklearn loop.

Synthetic data: N stores x --rows rows x 20 features (5 informative with store-specific weights,
15 noise), a binary target. Each phase runs in its own process; peak RSS is that process tree's
largest process.

1. bare: one process fits and scores the same N models (same split, same sklearn Pipeline and
   estimator as Conveyor builds), no tracking, no validation, no registry: the limit.
2. cold: `conveyor train sales` on an empty MLflow store (contract drafted, N segment models and
   the all-rows model trained, gated, tracked, registered; the router version registered), on the
   thread pool (`CONVEYOR_DASK=0`: unasked, 100 models or more would go to a LocalCluster).
3. rerun: the same command on unchanged data (goal: at most 0.1x cold).
4. change: 10 stores' rows replaced; the rerun trains those 10 (and the all-rows model, whose rows
   changed too) (goal: at most 0.1x cold plus the bare time of those 10 models).
5. cold on Dask: phase 2 again on a fresh store with the fan-out on a 2-worker `LocalCluster`
   (`CONVEYOR_DASK=1 CONVEYOR_WORKERS=2`; goal: at most 1.0x the bare loop). `--no-dask` skips it.

Conveyor runs against a Prefect server started once for the benchmark (the embedded mode's fixed
cost per command is measured by bench_training.py, not here).
Usage: benchmarks/bench_fleet.py [--models 1000] [--rows 2000] [--out benchmarks/results/fleet.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import PrefectServer, clean_env, write_result  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "fleet"
BIN = Path(sys.executable).parent
SPEC = "name: sales\ndata:\n  path: ../data/*.parquet\n  target: label\nsegments:\n  by: store\n  min_rows: 200\n"
FEATURES = 20
INFORMATIVE = 5


def store_frame(store: int, rows: int, seed: int) -> pd.DataFrame:
    """One store's rows: its own weights on 5 of the 20 features, the rest noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES)).astype("float32")
    informative = rng.choice(FEATURES, size=INFORMATIVE, replace=False)
    weights = rng.normal(scale=1.5, size=INFORMATIVE)
    signal = X[:, informative] @ weights + rng.normal(scale=1.0, size=rows)
    frame = pd.DataFrame(X.round(4), columns=[f"f{i}" for i in range(FEATURES)])
    frame.insert(0, "store", f"s{store:04d}")
    frame["label"] = np.where(signal > 0, "yes", "no")
    return frame


def write_data(home: Path, models: int, rows: int, changed: set[int] | None = None) -> None:
    """One Parquet file per 100 stores (a change rewrites the files it touches)."""
    folder = home / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for first in range(0, models, 100):
        stores = range(first, min(models, first + 100))
        if changed is not None and not changed.intersection(stores):
            continue
        frames = [store_frame(s, rows, s + (10_000 if changed and s in changed else 0)) for s in stores]
        pd.concat(frames, ignore_index=True).to_parquet(folder / f"part-{first // 100:03d}.parquet", index=False)


def bare_loop(home: Path) -> dict[str, float]:
    """Fit and score every store's model in one process: the same split, Pipeline and estimator."""
    from conveyor.spec import load_spec
    from tasks.data import split_frame
    from tasks.evaluation import compute_metrics
    from tasks.training import fit_pipeline

    frame = pd.concat([pd.read_parquet(p) for p in sorted((home / "data").glob("*.parquet"))], ignore_index=True)
    spec = load_spec(home / "pipelines" / "sales.yaml").for_task("binary")
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"drop": ("store",)})})
    start = time.perf_counter()
    seconds: list[float] = []
    for _, rows in frame.groupby("store", sort=True):
        one = time.perf_counter()
        split = split_frame(spec, rows)
        model, _ = fit_pipeline(spec, split.X_train, split.y_train)
        compute_metrics("binary", model, split.X_test, split.y_test)
        seconds.append(time.perf_counter() - one)
    return {"seconds": time.perf_counter() - start, "median_model_seconds": float(np.median(seconds))}


def env_for(home: Path, api_url: str) -> dict[str, str]:
    return clean_env() | {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_API_URL": api_url,
        "CONVEYOR_HOME": str(home),
        "GX_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
    }


def measured(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of a command, run through a wrapper that reports its child."""
    wrapper = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'rc': r.returncode, 'err': r.stderr[-3000:],"
        " 'out': r.stdout[-3000:], 'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *command], env=env, cwd=cwd, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{command} failed ({result['rc']}):\n{result['out']}\n{result['err']}")
    return {"seconds": round(result["seconds"], 2), "peak_mb": round(result["peak_mb"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--changed", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fleet.json"))
    parser.add_argument("--no-dask", action="store_true", help="skip the cold run on a 2-worker Dask LocalCluster")
    parser.add_argument("--phase", choices=["bare"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "bare":  # the child process of the bare measurement
        result = bare_loop(Path(args.home))
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    home = WORK / f"sales-{args.models}"
    shutil.rmtree(home, ignore_errors=True)
    (home / "pipelines").mkdir(parents=True)
    (home / "pipelines" / "sales.yaml").write_text(SPEC)
    write_data(home, args.models, args.rows)

    # The limit is measured in this run, beside Conveyor's, with the same OpenMP threads (1).
    command = [sys.executable, __file__, "--phase", "bare", "--home", str(home)]
    bare_env = clean_env() | {"OMP_NUM_THREADS": "1"}
    bare_run = subprocess.run(command, capture_output=True, text=True, check=True, env=bare_env)
    bare = json.loads(bare_run.stdout.strip().splitlines()[-1])
    print(f"bare loop: {bare['seconds']:.1f} s for {args.models} models", flush=True)

    server_home = WORK / "prefect-server"
    server_env = clean_env() | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(server_home)}
    with PrefectServer(server_home, server_env, deadline_s=900) as api_url:  # a loaded machine is slow
        env = env_for(home, api_url) | {"CONVEYOR_DASK": "0"}  # the thread pool, the sequential figure
        train = [str(BIN / "conveyor"), "train", "sales"]
        cold = measured(train, env, home)
        print(f"cold: {cold}", flush=True)
        rerun = measured(train, env, home)
        print(f"rerun: {rerun}", flush=True)
        changed = set(range(0, args.models, max(1, args.models // args.changed)))
        changed = set(sorted(changed)[: args.changed])
        write_data(home, args.models, args.rows, changed)
        change = measured(train, env, home)
        print(f"change {len(changed)}: {change}", flush=True)
        dask = None
        if not args.no_dask:  # the same cold run with the fan-out on a 2-worker Dask LocalCluster
            dask_home = WORK / f"sales-{args.models}-dask"
            shutil.rmtree(dask_home, ignore_errors=True)
            shutil.copytree(home / "pipelines", dask_home / "pipelines")
            write_data(dask_home, args.models, args.rows)
            dask_env = env_for(dask_home, api_url) | {"CONVEYOR_DASK": "1", "CONVEYOR_WORKERS": "2"}
            dask = measured(train, dask_env, dask_home)
            print(f"cold on a 2-worker LocalCluster: {dask}", flush=True)

    ten_bare = bare["median_model_seconds"] * len(changed)
    allowed = 0.1 * cold["seconds"] + ten_bare
    ratio = cold["seconds"] / bare["seconds"]
    goals = {
        "segments_cold_vs_bare": {
            "value": f"{ratio:.2f}x ({cold['seconds']:.0f} s vs {bare['seconds']:.0f} s, {args.models} models)",
            "goal": "<= 1.5x",
            "met": ratio <= 1.5,
        },
        "segments_rerun_unchanged": {
            "value": f"{rerun['seconds'] / cold['seconds']:.3f}x cold ({rerun['seconds']:.1f} s)",
            "goal": "<= 0.1x cold",
            "met": rerun["seconds"] <= 0.1 * cold["seconds"],
        },
        "segments_change_10": {
            "value": f"{change['seconds']:.1f} s (0.1x cold + {len(changed)} bare models = {allowed:.1f} s)",
            "goal": "<= 0.1x cold + the changed models' training",
            "met": change["seconds"] <= allowed,
        },
        **(
            {}
            if dask is None
            else {
                "segments_cold_dask_vs_bare": {
                    "value": f"{dask['seconds'] / bare['seconds']:.2f}x ({dask['seconds']:.0f} s, 2 Dask workers)",
                    "goal": "<= 1.0x",
                    "met": dask["seconds"] <= bare["seconds"],
                }
            }
        ),
        "segments_peak_memory": {
            "value": f"{cold['peak_mb']:.0f} MB (bare loop {bare['peak_mb']:.0f} MB)",
            "goal": "reported",
            "met": None,
        },
    }
    result = {
        "models": args.models,
        "rows_per_model": args.rows,
        "features": FEATURES,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "bare": bare,
        "cold": cold,
        "rerun_unchanged": rerun,
        "change": change | {"segments_changed": len(changed)},
        "cold_dask": dask,
        "ratio_cold_vs_bare": round(ratio, 3),
        "goals": goals,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
