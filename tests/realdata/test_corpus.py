"""The real-data corpus through the training flow, each from a five-line spec, against a plain
scikit-learn baseline (HistGradientBoosting, native categories) on the same split.

One project and one MLflow store for the module (per xdist worker): each dataset is trained once,
when a test first asks for it, and each test reads its outcome.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from conveyor.errors import ConveyorError
from conveyor.spec import METRICS, load_spec
from tasks.data import infer_task, load_dataset, split_frame
from tasks.evaluation import metrics_from_predictions
from tests.realdata.datasets import CORPUS, TINY_ROWS, RealDataset

pytestmark = [pytest.mark.slow, pytest.mark.realdata, pytest.mark.usefixtures("prefect_harness")]


def five_line_spec(folder: Path, entry: RealDataset, csv: Path) -> Path:
    path = folder / "pipelines" / f"{entry.name}.yaml"
    path.write_text(yaml.safe_dump({"name": entry.name, "data": {"path": str(csv), "target": entry.target}}))
    return path


def baseline_metric(spec_path: Path, csv: Path) -> tuple[str, float]:
    """A plain HistGradientBoosting on Conveyor's split: numbers as they are, text as pandas
    categories (native categorical splits; columns with more than 255 levels left out)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    spec = load_spec(spec_path)
    frame = load_dataset(str(csv)).frame
    spec = spec.for_task(infer_task(frame[spec.data.target]))
    split = split_frame(spec, frame)
    X_train, X_test = split.X_train.copy(), split.X_test.copy()
    for column in list(X_train.columns):
        values = X_train[column]
        if pd.api.types.is_numeric_dtype(values):
            continue
        levels = values.dropna().unique()
        if values.map(type).eq(str).all() and len(levels) <= 255:
            kind = pd.CategoricalDtype(sorted(levels))
            X_train[column], X_test[column] = values.astype(kind), X_test[column].astype(kind)
        else:  # dates, free text: a plain baseline leaves them out
            X_train, X_test = X_train.drop(columns=column), X_test.drop(columns=column)
    estimator: Any
    if spec.task == "regression":
        estimator = HistGradientBoostingRegressor(categorical_features="from_dtype", random_state=42)
        output = estimator.fit(X_train, split.y_train).predict(X_test)
        classes = None
    else:
        estimator = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=42)
        output = estimator.fit(X_train, split.y_train).predict_proba(X_test)
        classes = list(estimator.classes_)
    metrics = metrics_from_predictions(spec.task, classes, split.y_test, output)  # type: ignore[arg-type]
    return spec.primary_metric, metrics[spec.primary_metric]


class Outcomes(dict[str, Any]):
    """Each dataset trained the first time a test asks for it: its result, or the expected error it
    ended with. Lazy, so that `make test-realdata`'s xdist workers each train only their share."""

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home
        self.entries = {entry.name: entry for entry in CORPUS if entry.available()}

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __missing__(self, name: str) -> dict[str, Any]:
        from flows.training import training_flow

        entry = self.entries[name]
        csv = entry.write_csv(self.home / "data")
        spec = five_line_spec(self.home, entry, csv)
        started = time.perf_counter()
        try:
            result: Any = training_flow(spec=str(spec))
        except Exception as error:  # one dataset's failure must not hide the others' outcomes
            result = error
        self[name] = {"result": result, "spec": spec, "csv": csv, "seconds": time.perf_counter() - started}
        return self[name]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcomes]:
    """One project and MLflow store for the module's trainings."""
    home = tmp_path_factory.mktemp("realdata")
    (home / "pipelines").mkdir()
    (home / "data").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVEYOR_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("CONVEYOR_ARTIFACT_ROOT", raising=False)
        yield Outcomes(home)


@pytest.mark.parametrize("entry", CORPUS, ids=[entry.name for entry in CORPUS])
def test_real_dataset_trains_near_the_baseline_or_is_refused_rightly(entry: RealDataset, outcomes: Outcomes) -> None:
    if not entry.available():
        pytest.skip(f"{entry.package} is not installed (pip install {entry.package.replace('_', '-')})")
    outcome = outcomes[entry.name]
    result = outcome["result"]
    if isinstance(result, Exception) and not isinstance(result, ConveyorError):
        pytest.fail(f"{entry.name}: unexpected {type(result).__name__}: {result}")
    if entry.refusal is not None:
        assert isinstance(result, ConveyorError), f"{entry.name} should be refused ({entry.why})"
        message = str(result)
        assert "\n" not in message
        assert re.search(entry.refusal, message), message
        return
    assert not isinstance(result, Exception), f"{entry.name}: {result}"
    assert result["outcome"] == "promoted", result
    value = result["value"]
    assert value is not None and math.isfinite(value)
    metric, baseline = baseline_metric(outcome["spec"], outcome["csv"])
    assert metric == result["metric"]
    rows = len(pd.read_csv(outcome["csv"]))
    if entry.tolerance is None or rows < TINY_ROWS:
        return  # documented in the corpus table: trained, finite, not compared
    if METRICS[metric][1]:  # greater is better
        assert value >= baseline - entry.tolerance * abs(baseline), (metric, value, baseline)
    else:
        assert value <= baseline + entry.tolerance * abs(baseline) + np.finfo(float).eps, (metric, value, baseline)


def test_row_names_were_left_out_of_the_features(outcomes: Outcomes) -> None:
    from conveyor import registry

    trained = [name for name in ("engel", "sunspots", "statecrime") if name in outcomes]
    if not trained:
        pytest.skip("statsmodels is not installed")
    for name in trained:
        result = outcomes[name]["result"]
        model = registry.load_model(name, result["version"])
        features = set(model.named_steps["preprocess"].feature_names_in_)
        assert not features & {"rownames", "Unnamed: 0"}, (name, features)
