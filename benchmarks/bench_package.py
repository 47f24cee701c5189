"""Package + register cost per model: Conveyor against bare MLflow, side by side in one process.

Conveyor: `registry.package_model` (skops model, signature, input example, pinned requirements,
digest, card, spec, columns, profile and training-row hashes) then `describe_model` and
`register_version`, as the training flow's package and register tasks do.
Bare MLflow: `mlflow.sklearn.log_model` (skops, same signature, example and requirements) then
`create_model_version`, nothing else.
Two pipelines (HistGradientBoosting, LogisticRegression) fitted on 1,000 rows x 20 columns; the
rounds alternate the two sides; each figure is the median of --repeats rounds after a warm-up.
Usage: benchmarks/bench_package.py [--repeats 7] [--out benchmarks/results/package.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import machine, write_result  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "package"
GOAL_S = 0.2
ESTIMATORS = {
    "hist_gradient_boosting": "sklearn.ensemble.HistGradientBoostingClassifier",
    "logistic_regression": "sklearn.linear_model.LogisticRegression",
}


def measure(repeats: int) -> dict[str, dict[str, Any]]:
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "pipelines").mkdir(parents=True)
    os.environ["CONVEYOR_HOME"] = str(WORK)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    from benchmarks.bench_training import make_frame
    from conveyor import registry
    from conveyor.lineage import pinned_requirements
    from conveyor.spec import parse_spec
    from tasks.training import fit_pipeline

    frame = make_frame(1000)
    X, y = frame.drop(columns="label"), frame["label"]
    requirements = list(pinned_requirements())
    experiment = registry.ensure_experiment("pkg")
    client = registry.client()
    figures: dict[str, dict[str, Any]] = {}
    for label, estimator in ESTIMATORS.items():
        raw = {"name": f"pkg-{label}", "data": {"path": "x", "target": "label"}, "model": {"estimator": estimator}}
        spec = parse_spec(raw).for_task("binary")
        model, _ = fit_pipeline(spec, X, y)
        example, output = X.head(5), model.predict_proba(X.head(5))
        # The extra files the training flow logs with every model, at realistic sizes.
        extra: dict[str, str | bytes] = {
            "model_card.md": "# card\n" + "text\n" * 200,
            "conveyor/spec.json": spec.model_dump_json(indent=2),
            "conveyor/columns.json": json.dumps({"numeric": list(X.columns[:16]), "categorical": list(X.columns[16:])}),
            "conveyor/profile.json": json.dumps({"columns": {c: list(range(50)) for c in X.columns}}),
            "conveyor/train_rows.npy": os.urandom(8 * 800),
        }
        bare_name = f"bare-{label}"
        client.create_registered_model(bare_name)
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))  # bare MLflow needs the list too
        ours, bare = [], []
        for i in range(repeats + 1):  # round 0 warms imports, caches and the store
            run_id = registry.start_run("pkg", f"{label}-{i}", {})
            start = time.perf_counter()
            packaged = registry.package_model(run_id, model, example, output, requirements, extra_files=extra)
            registry.describe_model(spec.name, "bench")
            registry.register_version(
                spec.name,
                packaged.model_uri,
                run_id,
                {"conveyor.artifact_digest": packaged.artifact_digest},
                model_id=packaged.model_id,
            )
            ours.append(time.perf_counter() - start)
            run = client.create_run(experiment)
            start = time.perf_counter()
            with mlflow.start_run(run_id=run.info.run_id):
                info = mlflow.sklearn.log_model(
                    model,
                    name="model",
                    signature=infer_signature(example, output),
                    input_example=example,
                    pip_requirements=requirements,
                    serialization_format="skops",
                    skops_trusted_types=trusted,
                )
            client.create_model_version(bare_name, info.model_uri, run_id=run.info.run_id, model_id=info.model_id)
            bare.append(time.perf_counter() - start)
            print(f"{label} round {i}: conveyor {ours[-1]:.3f} s, bare {bare[-1]:.3f} s", file=sys.stderr, flush=True)
        # The figure's promise: what was registered loads through the digest-checked path.
        assert registry.load_model(spec.name, "1").predict(example) is not None
        figures[label] = {
            "conveyor_s": statistics.median(ours[1:]),
            "bare_mlflow_s": statistics.median(bare[1:]),
            "conveyor_all_s": [round(x, 3) for x in ours[1:]],
            "bare_mlflow_all_s": [round(x, 3) for x in bare[1:]],
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "package.json"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    figures = measure(args.repeats)
    goals = {
        f"package_register_s_per_model ({label}; bare MLflow {figure['bare_mlflow_s']:.3f} s)": {
            "value": round(figure["conveyor_s"], 3),
            "goal": f"<= {GOAL_S}",
            "met": figure["conveyor_s"] <= GOAL_S,
        }
        for label, figure in figures.items()
    }
    result = {
        "benchmark": "package",
        "baseline": "mlflow.sklearn.log_model (skops) + create_model_version of the same model",
        "repeats": args.repeats,
        "rows": 1000,
        "columns": 20,
        "per_model": figures,
        "goals": goals,
        "machine": machine(load),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
