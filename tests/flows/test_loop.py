"""The feedback loop under the Prefect harness: score, monitor, feed labels back, watch data."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from conveyor import registry
from conveyor.errors import DataError
from flows.monitoring import monitoring_flow
from flows.scoring import feedback_flow, scoring_flow
from flows.training import training_flow
from flows.watch import watch_flow
from tasks.drift.steps import NO_ID_COLUMN, NO_LABELS
from tests.conftest import REPO
from tests.factories import classification_frame, copy_project, trained_project, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")


def drifted(rows: int, seed: int):
    frame = classification_frame(rows=rows, seed=seed)
    # Shifted and squeezed: inside the contract's ranges (scoring accepts it), far from training.
    frame["x1"] = (frame["x1"] * 0.5 + 1.2).round(4)
    frame["x2"] = frame["x2"].clip(-3, 3)  # unchanged in distribution, kept inside the contract
    frame["colour"] = np.where(np.arange(rows) % 10 < 8, "red", frame["colour"])
    frame["row_id"] = frame["row_id"] + 100_000
    return frame


@pytest.fixture(scope="module")
def champion_template(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`churn` (800 rows, retrains on drift) trained once for the module: v1, champion."""
    return trained_project(tmp_path_factory.mktemp("loop"), rows=800, monitoring={"retrain_on": ["drift"]})


@pytest.fixture
def champion(project: Path, champion_template: Path) -> Path:
    """This test's own copy of the trained project; the spec of its champion."""
    copy_project(champion_template, project)
    return project / "pipelines" / "churn.yaml"


def score(project: Path, frame, name: str, model: str = "churn") -> Path:
    batch = write_csv(project, f"incoming/{name}.csv", frame.drop(columns=["label"]))
    out = project / "scored" / f"{name}.parquet"
    result = scoring_flow(model=model, input_path=str(batch), output_path=str(out))
    assert result["rows"] == len(frame)
    return out


def flow_run_and_artifact(state, key: str):
    """The flow run behind a returned state, and the latest markdown of the artifact `key`."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        artifacts = client.read_latest_artifacts()
    return run, next(a for a in artifacts if a.key == key).data


def test_same_distribution_raises_no_event(project: Path, champion: Path) -> None:
    score(project, classification_frame(rows=1500, seed=1), "calm")
    state = monitoring_flow(model="churn", since_hours=None, return_state=True)
    result = state.result()
    assert result["drift_detected"] is False, result
    assert result["events"] == []
    assert result["figures"]["domain_auc"] < 0.7
    # An id column but no feedback yet: drift is measured, performance waits for labels.
    assert result["performance"] == NO_LABELS
    assert "labelled_rows" not in result["figures"]
    # Runs are named after the version and the outcome, in MLflow and in Prefect.
    assert registry.client().get_run(result["run_id"]).info.run_name == "monitor-v1-ok"
    run, markdown = flow_run_and_artifact(state, "monitoring-churn")
    assert run.name == "monitor-churn-v1-ok"
    # Tracking is a local store here: no UI to link to, so the run id and the artifact path.
    assert f"Full report: MLflow run `{result['run_id']}`, artifact `monitoring/report.html`" in markdown
    assert "Performance: No labels yet." in markdown


def test_monitoring_without_an_id_column_measures_drift_and_says_how_to_get_performance(project: Path) -> None:
    """Issue 10.1: no `data.id_column` used to fail the whole run; drift needs no labels."""
    write_csv(project, "data/plain.csv", classification_frame(rows=800, seed=0).drop(columns=["row_id"]))
    spec = project / "pipelines" / "plain.yaml"
    spec.write_text("name: plain\ndata:\n  path: ../data/plain.csv\n  target: label\n")
    assert training_flow(spec=str(spec))["outcome"] == "promoted"
    score(project, drifted(1200, seed=4).drop(columns=["row_id"]), "plain-drifted", model="plain")

    state = monitoring_flow(model="plain", since_hours=None, return_state=True)
    result = state.result()
    assert result["drift_detected"] is True
    assert "x1" in result["drifted_features"]
    assert result["performance"] == NO_ID_COLUMN
    assert result["degraded"] is None and result["events"] == ["conveyor.drift.detected"]
    html = registry.artifact_text(result["run_id"], "monitoring/report.html")
    assert "No labels yet: set data.id_column to join late labels." in html
    run, markdown = flow_run_and_artifact(state, "monitoring-plain")
    assert run.name == "monitor-plain-v1-drift"
    assert "No labels yet: set data.id_column to join late labels." in markdown


def test_monitoring_with_an_empty_log_is_one_clear_error(project: Path, champion: Path) -> None:
    with pytest.raises(DataError, match="monitoring churn: the prediction log has no rows"):
        monitoring_flow(model="churn", since_hours=None)


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
    assert result["performance"] == "measured" and result["run_name"].startswith("monitor-v1-drift")
    html = registry.artifact_text(result["run_id"], "monitoring/report.html")
    # The report names x1 among the drifted features and draws its charts inline.
    drifted_line = re.search(r"<strong>Drifted:</strong> ([^<]*)</p>", html)
    assert drifted_line is not None and "x1" in drifted_line.group(1).split(", ")
    assert "data:image/png;base64," in html
    assert "per window" in html  # the performance section, now that labels arrived
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


def test_watch_skips_a_broken_spec_and_announces_the_rest(project: Path) -> None:
    write_csv(project, "data/fresh.csv", classification_frame(rows=200, seed=6))
    write_spec(project, "fresh", "../data/fresh.csv")
    (project / "pipelines" / "broken.yaml").write_text("name: broken\ndata: [unclosed\n")
    (project / "pipelines" / "wrong.yaml").write_text("name: wrong\ndata: {path: x.csv, target: y, colour: red}\n")

    state = watch_flow(return_state=True)
    results = state.result()
    assert state.is_completed()
    by_model = {item["model"]: item for item in results}
    assert by_model["fresh"]["status"] == "arrived"
    assert by_model["broken"]["status"] == "failed" and "YAML syntax error" in by_model["broken"]["reason"]
    assert by_model["wrong"]["status"] == "failed" and "colour" in by_model["wrong"]["reason"]
    assert registry.model_tag("fresh", "conveyor.announced_data_digest") == by_model["fresh"]["digest"]
    _, markdown = flow_run_and_artifact(state, "watch")
    assert "2 failed" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "**" in line]
    assert rows[0].startswith("| broken | **failed** | skipped | ") and "broken.yaml" in rows[0]
    assert rows[1].startswith("| wrong | **failed** |")
    assert rows[2].startswith("| fresh | **arrived** | new data announced |")


def test_triggered_runs_follow_the_retrain_policy(project: Path, champion: Path) -> None:
    skipped = training_flow(spec="churn", trigger="conveyor.data.arrived")
    assert skipped["outcome"] == "skipped" and "new_data" in skipped["reason"]
    cooled = training_flow(spec="churn", trigger="conveyor.drift.detected")
    assert cooled["outcome"] == "skipped" and "cooling down" in cooled["reason"]
    assert [str(v.version) for v in registry.list_versions("churn")] == ["1"]


def test_the_bundled_breast_cancer_example_closes_the_loop(project: Path) -> None:
    """From a fresh clone: train the bundled spec, score its batch, feed its labels back, monitor."""
    import shutil

    from conveyor.examples import write_examples

    for name in ("breast_cancer.yaml", "breast_cancer.expectations.json"):
        shutil.copy(REPO / "pipelines" / name, project / "pipelines" / name)
    files = {path.name: path for path in write_examples(project / "data")}
    assert training_flow(spec="breast_cancer")["outcome"] == "promoted"

    batch = files["breast_cancer-batch.csv"]
    scored = scoring_flow(model="breast_cancer", input_path=str(batch), output_path=str(project / "scored.csv"))
    fed = feedback_flow(model="breast_cancer", labels_path=str(files["breast_cancer-labels.csv"]))
    assert fed["recorded"] == fed["matched"] == scored["rows"] > 50

    result = monitoring_flow(model="breast_cancer", since_hours=None)
    assert result["performance"] == "measured"
    assert result["figures"]["labelled_rows"] == scored["rows"]
    assert result["figures"]["live_roc_auc"] > 0.9  # rows the model never saw, scored fairly
    # ~110 rows against the profile: PSI on ten bins is noisy at that size, so drift is not asserted.
    assert result["run_name"].startswith("monitor-v1-")
