"""The real `conveyor` command in subprocesses, in a throwaway project folder."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from tests.factories import classification_frame, write_csv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONVEYOR = str(Path(sys.executable).parent / "conveyor")
FIVE_LINES = """\
name: penguins
data:
  path: ../data/penguins.csv
  target: species
"""


def penguins(rows: int = 300, seed: int = 3):
    frame = classification_frame(rows=rows, seed=seed).drop(columns=["row_id"])
    return frame.rename(columns={"label": "species", "x1": "bill_length", "x2": "flipper", "colour": "island"})


def run(project: Path, *args: str, api_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_HOME"] = str(project / ".prefect")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run([CONVEYOR, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)


def registered_versions(project: Path, name: str) -> list[str]:
    """The versions of `name` in the project's embedded MLflow store (none when there is no store)."""
    store = project / ".conveyor" / "mlflow.db"
    if not store.exists():
        return []
    from mlflow import MlflowClient

    uri = f"sqlite:///{store}"
    return [v.version for v in MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name='{name}'")]


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "penguins.yaml").write_text(FIVE_LINES)
    write_csv(tmp_path, "data/penguins.csv", penguins())
    return tmp_path


@pytest.fixture(scope="module")
def api_url(prefect_api_url: str) -> str:
    return prefect_api_url


def test_five_line_spec_trains_to_a_champion_with_no_setup(fresh: Path) -> None:
    """No PREFECT_API_URL, no MLFLOW_TRACKING_URI: the embedded defaults do everything."""
    result = run(fresh, "train", "penguins")
    assert result.returncode == 0, result.stderr
    assert "penguins v1: promoted" in result.stdout
    assert (fresh / ".conveyor" / "mlflow.db").is_file()
    assert not (fresh / "mlruns").exists()
    shown = run(fresh, "show", "penguins")
    assert shown.returncode == 0, shown.stderr
    assert "champion v1" in shown.stdout
    assert "promoted" in shown.stdout

    # The loop's commands in the same mode: each flow run on the command's own temporary server,
    # recorded in Prefect's database under PREFECT_HOME, as Prefect's own temporary server does.
    write_csv(fresh, "incoming.csv", penguins(rows=80, seed=4).drop(columns=["species"]))
    scored = run(fresh, "score", "penguins", "--input", "incoming.csv", "--output", "scored.csv")
    assert scored.returncode == 0, scored.stderr
    assert "80 rows scored" in scored.stdout and (fresh / "scored.csv").is_file()
    monitored = run(fresh, "monitor", "penguins")
    assert monitored.returncode == 0, monitored.stderr
    assert "penguins v1: drifted features:" in monitored.stdout
    with closing(sqlite3.connect(fresh / ".prefect" / "prefect.db")) as db:
        flows = db.execute(
            "SELECT flow.name, flow_run.state_name FROM flow_run JOIN flow ON flow.id = flow_run.flow_id"
        )
        assert sorted(flows) == [("monitoring", "Completed"), ("scoring", "Completed"), ("training", "Completed")]
    assert "Traceback" not in scored.stderr + monitored.stderr


def test_rerun_changes_nothing_and_worse_or_failing_models_exit_nonzero(fresh: Path, api_url: str) -> None:
    assert run(fresh, "train", "penguins", api_url=api_url).returncode == 0
    again = run(fresh, "train", "pipelines/penguins.yaml", api_url=api_url)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and "v1" in again.stdout

    spec = fresh / "pipelines" / "penguins.yaml"
    spec.write_text(FIVE_LINES + "model: {estimator: sklearn.dummy.DummyClassifier}\n")
    kept = run(fresh, "train", "penguins", api_url=api_url)
    assert kept.returncode == 0, kept.stderr
    assert "v2: kept" in kept.stdout

    spec.write_text(
        FIVE_LINES + "model: {estimator: sklearn.dummy.DummyClassifier}\nevaluation: {floors: {roc_auc: 0.9}}\n"
    )
    rejected = run(fresh, "train", "penguins", api_url=api_url)
    assert rejected.returncode == 1
    assert "rejected" in rejected.stderr and "below the floor 0.9" in rejected.stderr
    assert "Traceback" not in rejected.stderr + rejected.stdout
    shown = run(fresh, "show", "penguins")
    assert "champion v1" in shown.stdout


def test_a_spec_that_does_not_load_is_refused_before_any_server_starts(fresh: Path) -> None:
    """In the embedded mode, a typo in the spec is answered without starting Prefect or MLflow."""
    (fresh / "pipelines" / "penguins.yaml").write_text(FIVE_LINES + "modle: {}\n")
    result = run(fresh, "train", "penguins")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: {fresh / 'pipelines' / 'penguins.yaml'}: unknown key 'modle'"
    assert not (fresh / ".prefect" / "prefect.db").exists()  # no temporary Prefect server was started
    assert not (fresh / ".conveyor" / "mlflow.db").exists()  # nor the MLflow store opened


@pytest.mark.parametrize(
    ("spec_text", "code", "message"),
    [
        (FIVE_LINES + "modle: {}\n", 2, "unknown key 'modle'"),
        (FIVE_LINES.replace("target: species", "target: beak"), 3, "target column 'beak' is not in the data"),
        (FIVE_LINES.replace("penguins.csv", "nothing.csv"), 3, "nothing.csv: no such file"),
        (FIVE_LINES + "model: {estimator: sklearn.linear_model.Nope}\n", 2, "does not import"),
    ],
)
def test_expected_errors_print_one_line_and_exit_nonzero(
    fresh: Path, api_url: str, spec_text: str, code: int, message: str
) -> None:
    (fresh / "pipelines" / "penguins.yaml").write_text(spec_text)
    result = run(fresh, "train", "penguins", api_url=api_url)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert registered_versions(fresh, "penguins") == []
