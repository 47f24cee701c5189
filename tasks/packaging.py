"""Package a trained model: its reference profile and the logged MLflow model (with its card)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.lineage import pinned_requirements
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.data import Split
from tasks.drift.profile import build_profile, profile_text
from tasks.evaluation import prediction_frame
from tasks.training import infer_columns


@task(name="build_reference_profile", cache_policy=NO_CACHE)
def build_reference_profile(
    spec: PipelineSpec, model: Any, split: Split, metrics: dict[str, float], output: np.ndarray | None = None
) -> dict[str, Any]:
    """What monitoring compares recent rows with: the training rows' profile and the holdout's
    predictions (`output`, when the caller has them), stored with the model instead of the training data."""
    roles = infer_columns(split.X_train)
    assert spec.task is not None  # settled before training
    return build_profile(
        split.X_train,
        list(roles.numeric),
        list(roles.categorical),
        prediction_frame(spec.task, model, split.X_test, output),
        metrics,
        seed=spec.data.split.seed,
    )


@task(name="package_model", **IO_TASK)
def package_model(
    run_id: str,
    spec: PipelineSpec,
    model: Any,
    X_example: pd.DataFrame,
    card: str,
    profile: dict[str, Any],
    train_rows: bytes,
) -> registry.PackagedModel:
    """Log the pipeline with signature, input example, pinned requirements, its model card, its
    spec, its column roles and its reference profile."""
    example = X_example.head(5)
    output = model.predict_proba(example) if hasattr(model, "predict_proba") else model.predict(example)
    roles = infer_columns(X_example)
    extra: dict[str, str | bytes] = {
        "model_card.md": card,
        "conveyor/spec.json": spec.model_dump_json(indent=2),
        "conveyor/columns.json": registry.to_json({"numeric": roles.numeric, "categorical": roles.categorical}),
        "conveyor/profile.json": profile_text(profile),
        # The training rows' hashes: a later run leaves them out when it scores this model as champion.
        "conveyor/train_rows.npy": train_rows,
    }
    return registry.package_model(run_id, model, example, output, list(pinned_requirements()), extra_files=extra)
