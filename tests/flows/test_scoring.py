"""The scoring and feedback flows under the Prefect harness, on a model the training flow made."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conveyor import predictions, registry
from conveyor.errors import DataError, RegistryError
from flows.scoring import feedback_flow, scoring_flow
from tests.factories import classification_frame, copy_project

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def trained(churn_template: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the session's trained `churn` (v1, champion), shared by the module's tests."""
    return copy_project(churn_template[0], tmp_path_factory.mktemp("project"))


@pytest.fixture
def project(trained: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trained project with a prediction log of this test's own."""
    monkeypatch.setenv("CONVEYOR_HOME", str(trained))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CONVEYOR_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv(predictions.PREDICTION_LOG_ENV, str(trained / f"log-{uuid.uuid4().hex[:8]}"))
    monkeypatch.setenv(predictions.FEEDBACK_LOG_ENV, str(trained / f"feedback-{uuid.uuid4().hex[:8]}"))
    return trained


def new_rows(project: Path, rows: int = 120, seed: int = 11, name: str = "new.parquet") -> Path:
    path = project / "incoming" / name
    path.parent.mkdir(exist_ok=True)
    classification_frame(rows=rows, seed=seed).drop(columns="label").to_parquet(path, index=False)
    return path


def test_scores_with_the_champion_and_logs_every_row(project: Path) -> None:
    from prefect.client.orchestration import get_client

    source = new_rows(project)
    output = project / "out" / "scores.csv"
    state = scoring_flow(model="churn", input_path=str(source), output_path=str(output), return_state=True)
    result = state.result()

    assert (result["version"], result["alias"], result["rows"]) == ("1", "champion", 120)
    scores = pd.read_csv(output)
    assert list(scores.columns) == [
        "row_id",
        "prediction",
        "proba_no",
        "proba_yes",
        "model_version",
        "scored_at",
    ]
    assert scores["model_version"].astype(str).unique().tolist() == ["1"]
    assert set(scores["prediction"]) <= {"yes", "no"}
    # The same rows through the registered model directly give the same probabilities.
    model = registry.load_model("churn", "1")
    frame = pd.read_parquet(source)
    expected = model.predict_proba(frame.drop(columns="row_id"))[:, 1]
    assert scores["proba_yes"].to_numpy() == pytest.approx(expected, rel=1e-9)

    day = datetime.now(UTC).date().isoformat()
    assert (Path(predictions.prediction_log_uri("churn")) / f"date={day}").is_dir()
    logged = predictions.read("churn")
    assert logged["row_id"].tolist() == frame["row_id"].tolist()
    assert {"x1", "x2", "colour", "prediction", "model_version", "scored_at"} <= set(logged.columns)

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        artifact = client.read_latest_artifacts()
    assert run.name == "score-churn" and "model:churn" in run.tags
    markdown = next(a for a in artifact if a.key == "scoring-churn").data
    assert "| rows scored | 120 in 1 chunk |" in markdown and "scores.csv" in markdown
    assert "1 (champion)" in markdown and "rows/s" in markdown
    # A local store has no UI to link to: the model's URI stands in for the link.
    assert "| in MLflow | model `models:/churn/1` |" in markdown


def test_a_named_version_is_used_and_recorded(project: Path) -> None:
    result = scoring_flow(
        model="churn",
        input_path=str(new_rows(project)),
        output_path=str(project / "v1.parquet"),
        version="1",
    )
    assert (result["version"], result["alias"]) == ("1", None)
    with pytest.raises(RegistryError, match="model 'churn' has no version 9"):
        scoring_flow(
            model="churn",
            input_path=str(new_rows(project)),
            output_path=str(project / "v9.parquet"),
            version="9",
        )


def test_an_input_breaking_the_serving_contract_changes_nothing(project: Path) -> None:
    path = project / "incoming" / "extra.csv"
    path.parent.mkdir(exist_ok=True)
    classification_frame(rows=30, seed=3).drop(columns="label").assign(segment="b2b").to_csv(path, index=False)
    output = project / "refused.csv"
    with pytest.raises(DataError, match=r"extra.csv: unexpected column 'segment'"):
        scoring_flow(model="churn", input_path=str(path), output_path=str(output))
    assert not output.exists()
    assert predictions.read("churn").empty


def test_late_labels_join_the_logged_predictions(project: Path) -> None:
    source = new_rows(project, rows=40)
    scoring_flow(model="churn", input_path=str(source), output_path=str(project / "s.parquet"))
    ids = pd.read_parquet(source)["row_id"].tolist()
    first = project / "labels-1.csv"
    pd.DataFrame({"row_id": ids[:10], "label": ["no"] * 10}).to_csv(first, index=False)
    result = feedback_flow(model="churn", labels_path=str(first))
    assert (result["recorded"], result["matched"]) == (10, 10)
    again = project / "labels-2.parquet"
    pd.DataFrame({"row_id": ids[5:15], "label": ["yes"] * 10}).to_parquet(again)
    feedback_flow(model="churn", labels_path=str(again))

    joined = predictions.joined("churn").set_index("row_id")
    assert joined.loc[ids[:5], "label"].tolist() == ["no"] * 5
    assert joined.loc[ids[5:15], "label"].tolist() == ["yes"] * 10  # the later label wins
    assert joined.loc[ids[15:], "label"].isna().all()


def test_cli_scores_and_refuses_with_one_line(project: Path) -> None:
    from app.cli import app

    runner = CliRunner()
    source = new_rows(project, rows=25)
    done = runner.invoke(app, ["score", "churn", "--input", str(source), "--output", str(project / "cli.parquet")])
    assert done.exit_code == 0, done.output
    assert "churn v1 (champion): 25 rows scored" in done.output
    labels = project / "bad-labels.csv"
    pd.DataFrame({"customer": [1], "label": ["no"]}).to_csv(labels, index=False)
    refused = runner.invoke(app, ["feedback", "churn", "--labels", str(labels)])
    assert refused.exit_code == DataError.exit_code
    assert refused.output.strip().splitlines() == [
        f"error: {labels}: a labels file needs the id column 'row_id' and the target column "
        "'label'; missing 'row_id' (columns: customer, label)"
    ]
