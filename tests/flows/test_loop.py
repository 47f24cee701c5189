"""The feedback loop under the Prefect harness: score, monitor, feed labels back, watch data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conveyor import registry
from flows.monitoring import monitoring_flow
from flows.scoring import feedback_flow, scoring_flow
from flows.training import training_flow
from flows.watch import watch_flow
from tests.factories import classification_frame, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")


def drifted(rows: int, seed: int):
    frame = classification_frame(rows=rows, seed=seed)
    # Shifted and squeezed: inside the contract's ranges (scoring accepts it), far from training.
    frame["x1"] = (frame["x1"] * 0.5 + 1.2).round(4)
    frame["x2"] = frame["x2"].clip(-3, 3)  # unchanged in distribution, kept inside the contract
    frame["colour"] = np.where(np.arange(rows) % 10 < 8, "red", frame["colour"])
    frame["row_id"] = frame["row_id"] + 100_000
    return frame


@pytest.fixture
def champion(project: Path) -> Path:
    write_csv(project, "data/train.csv", classification_frame(rows=800, seed=0))
    spec = write_spec(project, "churn", "../data/train.csv", monitoring={"retrain_on": ["drift"]})
    assert training_flow(spec=str(spec))["outcome"] == "promoted"
    return spec


def score(project: Path, frame, name: str) -> Path:
    batch = write_csv(project, f"incoming/{name}.csv", frame.drop(columns=["label"]))
    out = project / "scored" / f"{name}.parquet"
    result = scoring_flow(model="churn", input_path=str(batch), output_path=str(out))
    assert result["rows"] == len(frame)
    return out


def test_same_distribution_raises_no_event(project: Path, champion: Path) -> None:
    score(project, classification_frame(rows=1500, seed=1), "calm")
    result = monitoring_flow(model="churn", since_hours=None)
    assert result["drift_detected"] is False, result
    assert result["events"] == []
    assert result["figures"]["domain_auc"] < 0.7


def test_drift_is_detected_and_labels_show_real_performance(project: Path, champion: Path) -> None:
    batch = drifted(1500, seed=2)
    score(project, batch, "drifted")
    labels = write_csv(project, "labels/drifted.csv", batch[["row_id", "label"]].iloc[:900])
    feedback_flow(model="churn", labels_path=str(labels))

    result = monitoring_flow(model="churn", since_hours=None)
    assert result["drift_detected"] is True
    assert "x1" in result["drifted_features"] and "colour" in result["drifted_features"]
    assert "x2" not in result["drifted_features"]
    assert result["events"][0] == "conveyor.drift.detected"
    assert result["figures"]["labelled_rows"] == 900
    assert 0.5 < result["figures"]["live_roc_auc"] <= 1.0

    client = registry.client()
    run = client.get_run(result["run_id"])
    assert run.data.tags["conveyor.model_version"] == "1"
    html = registry.artifact_text(result["run_id"], "monitoring/report.html")
    assert "x1" in html and "<svg" in html or "data:image/png;base64" in html
    version = registry.get_version("churn", "1")
    assert version.tags["conveyor.last_monitoring_run"] == result["run_id"]


def test_watch_announces_new_data_once(project: Path, champion: Path) -> None:
    first = watch_flow()
    assert [item["status"] for item in first] == ["trained"]
    write_csv(project, "data/train.csv", classification_frame(rows=900, seed=5))
    assert watch_flow()[0]["status"] == "arrived"
    assert watch_flow()[0]["status"] == "announced"
    assert training_flow(spec="churn")["version"] == "2"
    assert watch_flow()[0]["status"] == "trained"


def test_triggered_runs_follow_the_retrain_policy(project: Path, champion: Path) -> None:
    skipped = training_flow(spec="churn", trigger="conveyor.data.arrived")
    assert skipped["outcome"] == "skipped" and "new_data" in skipped["reason"]
    cooled = training_flow(spec="churn", trigger="conveyor.drift.detected")
    assert cooled["outcome"] == "skipped" and "cooling down" in cooled["reason"]
    assert [str(v.version) for v in registry.list_versions("churn")] == ["1"]
