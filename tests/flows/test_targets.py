"""Targets coded as people code them (0/1, 1/2, TRUE/FALSE, 0.0/1.0, integers for classes):
trained, evaluated, plotted and scored like text labels."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor import predictions, registry
from conveyor.errors import DataError
from flows.training import training_flow
from tests.factories import classification_frame, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

# How each coding is written in the CSV: the text a spreadsheet or R would write.
CODINGS = {
    "zero_one": ("1", "0"),
    "one_two": ("2", "1"),
    "true_false": ("TRUE", "FALSE"),
    "float": ("1.0", "0.0"),
}


def _value(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text.lower()


def _write_coded(project: Path, positive: np.ndarray, codes: tuple[str, str], rows: pd.DataFrame) -> Path:
    path = project / "data" / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = rows.drop(columns="label").assign(label=np.where(positive, codes[0], codes[1]))
    # Written as text so the file holds exactly TRUE/FALSE or 1.0/0.0, as an export would.
    path.write_text(frame.astype(str).to_csv(index=False))
    return path


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_binary_target_coded_as_numbers_or_booleans_trains_and_scores(
    project: Path, coding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = classification_frame(rows=300)
    _write_coded(project, (rows["label"] == "yes").to_numpy(), CODINGS[coding], rows)
    result = training_flow(spec=str(write_spec(project, "coded", "../data/train.csv")))
    assert result["outcome"] == "promoted"
    assert result["value"] > 0.8  # roc_auc: the same signal as the text-labelled frame
    artifacts = {item.path for item in registry.client().list_artifacts(result["run_id"], "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc_curve.png", "plots/precision_recall.png"} <= artifacts

    from flows.scoring import scoring_flow

    monkeypatch.setenv(predictions.PREDICTION_LOG_ENV, str(project / f"log-{uuid.uuid4().hex[:8]}"))
    source = project / "incoming.csv"
    classification_frame(rows=40, seed=5).drop(columns="label").to_csv(source, index=False)
    output = project / "scores.csv"
    scoring_flow(model="coded", input_path=str(source), output_path=str(output))
    scored = pd.read_csv(output, dtype=str)
    # Every prediction is one of the file's classes (as CSV writers spell them: true, 1 for 1.0).
    assert {_value(p) for p in scored["prediction"]} <= {_value(c) for c in CODINGS[coding]}
    assert len(scored) == 40


def test_multiclass_target_coded_as_integers_trains(project: Path) -> None:
    rows = classification_frame(rows=450)
    grade = np.digitize(rows["x1"].to_numpy(), [-0.5, 0.5]) + 1  # 1, 2, 3
    frame = rows.drop(columns="label").assign(label=grade)
    path = project / "data" / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    result = training_flow(spec=str(write_spec(project, "graded", "../data/train.csv")))
    assert result["outcome"] == "promoted"
    version = registry.get_version("graded", result["version"])
    assert version.tags["conveyor.task"] == "multiclass"
    assert float(version.tags["conveyor.metric.accuracy"]) > 0.8


def test_class_seen_only_in_the_holdout_is_refused_by_name(project: Path) -> None:
    rows = classification_frame(rows=200)
    labels = rows["label"].to_numpy().copy()
    labels[:10] = [f"rare_{i}" for i in range(10)]  # one row each: a random split can't train on all of them
    path = project / "data" / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.assign(label=labels).to_csv(path, index=False)
    spec = write_spec(project, "rare", "../data/train.csv", contract={"max_duplicate_fraction": 1.0})
    with pytest.raises(DataError) as caught:
        training_flow(spec=str(spec))
    message = str(caught.value)
    assert "\n" not in message
    assert "'label'" in message and "rare_" in message
    assert registry.list_versions("rare") == []


def test_an_iso_date_feature_trains_through_the_flow(project: Path) -> None:
    """vega's cars: a `Year` column of ISO dates. The model sees its numeric parts."""
    rows = classification_frame(rows=300)
    days = pd.date_range("1970-01-01", periods=300, freq="7D")
    path = project / "data" / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.assign(Year=days.strftime("%Y-%m-%d")).to_csv(path, index=False)
    result = training_flow(spec=str(write_spec(project, "dated", "../data/train.csv")))
    assert result["outcome"] == "promoted"
    model = registry.load_model("dated", result["version"])
    names = list(model.named_steps["preprocess"].get_feature_names_out())
    assert {"Year_year", "Year_month", "Year_day", "Year_dayofweek"} <= set(names)
