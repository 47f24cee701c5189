"""The training flow under the Prefect test harness, against a throwaway SQLite MLflow store."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from conveyor import registry
from conveyor.errors import GateNotMet
from flows.training import training_flow
from tests.factories import classification_frame, copy_project, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]
SHA256 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture
def trained(project: Path, churn_template: tuple[Path, dict]) -> dict:
    """This test's own copy of the session's trained `churn` (v1, champion), and what its first run returned."""
    template, result = churn_template
    copy_project(template, project)
    return dict(result)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_digest(folder: Path) -> str:
    """sha256 over a model folder's files (relative path, then bytes, in path order), as logged."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "registered_model_meta")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def test_first_run_promotes_and_records_lineage(project: Path, trained: dict) -> None:
    assert trained["outcome"] == "promoted"
    assert trained["champion"] == trained["version"] == "1"
    version = registry.get_version("churn", "1")
    tags = version.tags
    # The data digest is the sha256 of the file's own digest (a set of files digests the same
    # way, names ignored), computed here from the bytes on disk.
    file_digest = sha256_hex((project / "data" / "train.csv").read_bytes())
    assert tags["conveyor.data_digest"] == sha256_hex(file_digest.encode())
    # The artifact digest covers exactly the files of the logged model as stored.
    model_id = version.source.removeprefix("models:/")
    model_folder = Path(registry.client().get_logged_model(model_id).artifact_location)
    assert model_folder.is_relative_to(project / ".conveyor" / "artifacts")
    assert tags["conveyor.artifact_digest"] == files_digest(model_folder)
    # The code revision is a commit of this repository (dirty when the tree was).
    commit = tags["conveyor.code_revision"].removesuffix("-dirty")
    known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and known.returncode == 0, tags["conveyor.code_revision"]
    for key in ("spec_digest", "code_digest", "lineage_key"):
        assert SHA256.fullmatch(tags[f"conveyor.{key}"]), key
    assert tags["conveyor.decision"] == "promoted"
    assert float(tags["conveyor.metric.roc_auc"]) > 0.8
    run = registry.client().get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["roc_auc"] == pytest.approx(float(tags["conveyor.metric.roc_auc"]), rel=1e-5)
    assert run.inputs.dataset_inputs[0].dataset.name == "churn"
    artifacts = {item.path for item in registry.client().list_artifacts(version.run_id)}
    assert {"model_card.md", "plots", "feature_importance.json", "validation", "conveyor"} <= artifacts
    # The audit trail records the promotion.
    trail = registry.audit_trail("churn")
    assert trail[0]["outcome"] == "promoted" and trail[0]["version"] == "1"


def test_champion_loads_by_alias_and_predicts(project: Path, trained: dict) -> None:
    import mlflow.pyfunc

    registry.client()
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    frame = classification_frame(rows=20, seed=9).drop(columns=["label", "row_id"])
    predictions = model.predict(frame)
    assert len(predictions) == 20


def test_rerun_on_same_data_adds_no_version(project: Path, trained: dict) -> None:
    again = training_flow(spec=str(project / "pipelines" / "churn.yaml"))
    assert again["reused"] is True
    assert again["version"] == "1"
    assert [str(v.version) for v in registry.list_versions("churn")] == ["1"]


def test_worse_model_is_kept_out(project: Path, trained: dict) -> None:
    spec = write_spec(
        project,
        "churn",
        "../data/train.csv",
        model={"estimator": "sklearn.dummy.DummyClassifier", "params": {"strategy": "prior"}},
    )
    worse = training_flow(spec=str(spec))
    assert worse["outcome"] == "kept"
    assert worse["version"] == "2"
    assert str(registry.alias_version("churn", "champion").version) == "1"
    assert str(registry.alias_version("churn", "challenger").version) == "2"
    first, second = registry.get_version("churn", "1").tags, registry.get_version("churn", "2").tags
    assert second["conveyor.decision"] == "kept"
    # Its run holds its own holdout metrics and the champion's on the same rows (one write).
    logged = registry.client().get_run(registry.get_version("churn", "2").run_id).data.metrics
    assert logged["champion.roc_auc"] > logged["roc_auc"]
    # Same data, another spec: the data digest stays, the spec digest and so the key change.
    assert second["conveyor.data_digest"] == first["conveyor.data_digest"]
    for changed in ("spec_digest", "lineage_key", "artifact_digest"):
        assert second[f"conveyor.{changed}"] != first[f"conveyor.{changed}"], changed


def test_better_model_replaces_the_champion(project: Path, weak_churn_template: Path) -> None:
    copy_project(weak_churn_template, project)  # v1: a depth-1 tree on 600 rows, promoted
    assert registry.get_version("churn", "1").tags["conveyor.decision"] == "promoted"
    assert str(registry.alias_version("churn", "champion").version) == "1"
    strong = write_spec(project, "churn", "../data/train.csv", evaluation={"margin": 0.01})
    result = training_flow(spec=str(strong))
    assert result["outcome"] == "promoted", result["reason"]
    assert str(registry.alias_version("churn", "champion").version) == "2"


def test_floor_rejects_and_leaves_champion(project: Path, trained: dict) -> None:
    spec = write_spec(
        project,
        "churn",
        "../data/train.csv",
        model={"estimator": "sklearn.dummy.DummyClassifier"},
        evaluation={"floors": {"roc_auc": 0.7}},
    )
    with pytest.raises(GateNotMet, match="roc_auc 0.5 is below the floor 0.7"):
        training_flow(spec=str(spec))
    assert str(registry.alias_version("churn", "champion").version) == "1"
    assert registry.get_version("churn", "2").tags["conveyor.decision"] == "rejected"
    assert registry.audit_trail("churn")[0]["outcome"] == "rejected"


def test_promotion_can_be_withheld(project: Path) -> None:
    write_csv(project, "data/train.csv", classification_frame())
    spec = write_spec(project, "churn", "../data/train.csv")
    result = training_flow(spec=str(spec), allow_promotion=False)
    assert result["outcome"] == "kept"
    assert registry.alias_version("churn", "champion") is None


def test_a_version_left_undecided_by_a_dead_run_is_finished(project: Path, trained: dict) -> None:
    """A run killed after writing its intent but before its decision tag leaves an undecided
    version: the next run finishes it from the intent (no second version, no refit, one audit entry)."""
    registry.client().delete_model_version_tag("churn", "1", "conveyor.decision")
    again = training_flow(spec=str(project / "pipelines" / "churn.yaml"))
    assert again["version"] == "1" and again["outcome"] == "promoted"
    assert [str(v.version) for v in registry.list_versions("churn")] == ["1"]
    assert registry.get_version("churn", "1").tags["conveyor.decision"] == "promoted"
    assert [entry["outcome"] for entry in registry.audit_trail("churn")] == ["promoted"]


def test_a_version_registered_by_a_dead_run_before_its_intent_is_deleted(project: Path, trained: dict) -> None:
    for key in ("conveyor.decision", "conveyor.intent"):
        registry.client().delete_model_version_tag("churn", "1", key)
    registry.client().delete_registered_model_alias("churn", "champion")
    registry.client().delete_registered_model_alias("churn", "challenger")
    again = training_flow(spec=str(project / "pipelines" / "churn.yaml"))
    assert [str(v.version) for v in registry.list_versions("churn")] == ["2"]
    assert again["version"] == "2" and again["outcome"] == "promoted"
