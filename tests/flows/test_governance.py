"""Governance on real stores: a medium or high risk candidate waits for people, who approve or
reject it from the CLI; a request times out; rollback moves the champion back (scoring follows);
the history lists every decision, newest first."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app
from conveyor import audit, registry
from conveyor.errors import RegistryError
from conveyor.spec import find_spec
from flows.governance import rollback_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from tasks import approvals
from tests.factories import classification_frame, copy_project, project_home, trained_project, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

WEAK = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1}}
BETTER = {"estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 3}}
BEST = {"estimator": "sklearn.linear_model.LogisticRegression"}
MEDIUM = {"risk_tier": "medium", "approvers": ["ana", "bo"], "approval_timeout_hours": 24}
HIGH = {"risk_tier": "high", "approvers": ["ana", "bo"]}


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def spec_path(root: Path, model: dict[str, Any], governance: dict[str, Any] | None = None) -> Path:
    sections: dict[str, Any] = {"model": model} | ({"governance": governance} if governance else {})
    return write_spec(root, "churn", "../data/train.csv", **sections)


def champion() -> str | None:
    found = registry.alias_version("churn", registry.CHAMPION)
    return None if found is None else str(found.version)


def decision(version: str) -> str:
    return str(registry.get_version("churn", version).tags.get("conveyor.decision"))


@pytest.fixture(scope="module")
def waiting(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`churn` v1 (a depth-1 tree, low risk) champion; v2 (depth 3, medium risk) trained from the
    CLI, waiting for approval. The CLI's output is returned beside the project."""
    root = trained_project(tmp_path_factory.mktemp("waiting"), rows=600, model=WEAK)
    with project_home(root):
        spec_path(root, BETTER, MEDIUM)
        done = cli("train", "churn")
    assert done.exit_code == 0, done.output
    return root, done.output


@pytest.fixture
def pending(project: Path, waiting: tuple[Path, str]) -> Path:
    from mlflow.tracking._tracking_service import utils

    copy_project(waiting[0], project)
    utils._artifact_repos_cache.clear()  # the copy's runs have the template's ids: forget where they were
    return project


def test_medium_risk_candidate_waits_and_the_champion_stays(pending: Path, waiting: tuple[Path, str]) -> None:
    lines = waiting[1].strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("churn v2: pending")
    assert "conveyor approve churn 2 --as NAME" in lines[0] and "conveyor reject churn 2 --as NAME" in lines[0]
    assert champion() == "1"
    assert str(registry.alias_version("churn", registry.CHALLENGER).version) == "2"
    assert decision("2") == "pending"
    assert [(e["version"], e["outcome"]) for e in registry.audit_trail("churn")][:1] == [("2", "pending")]


def test_approve_from_the_cli_promotes_and_the_card_records_it(pending: Path) -> None:
    done = cli("approve", "churn", "2", "--as", "ana", "--comment", "holdout looks right")
    assert done.exit_code == 0, done.output
    assert "churn v2 promoted" in done.output
    assert champion() == "2" and decision("2") == "promoted"
    trail = registry.audit_trail("churn")
    assert [(e["outcome"], e["actor"]) for e in trail[:2]] == [("promoted", "ana"), ("approved", "ana")]
    assert trail[1]["comment"] == "holdout looks right"
    card = registry.artifact_text(registry.get_version("churn", "2").run_id, "model_card.md")
    assert "## Approvals" in card and "| ana | approved | holdout looks right |" in card
    assert "holdout looks right" in registry.artifact_text(registry.get_version("churn", "2").run_id, "model_card.html")


def test_reject_tags_rejected_and_needs_a_reason(pending: Path) -> None:
    no_reason = cli("reject", "churn", "2", "--as", "bo", "--comment", " ")
    assert no_reason.exit_code == RegistryError.exit_code
    assert no_reason.output.strip().splitlines() == [
        "error: a rejection of churn v2 needs a comment saying why (--comment)"
    ]
    done = cli("reject", "churn", "2", "--as", "bo", "--comment", "trained on last quarter only")
    assert done.exit_code == 0, done.output
    assert champion() == "1" and decision("2") == "rejected"
    assert registry.get_version("churn", "2").tags["conveyor.approval"] == "rejected"
    entry = registry.audit_trail("churn")[0]
    assert (entry["outcome"], entry["actor"], entry["comment"]) == (
        audit.REFUSED,
        "bo",
        "trained on last quarter only",
    )
    again = cli("approve", "churn", "2", "--as", "ana")
    assert again.exit_code == RegistryError.exit_code
    assert "not waiting for approval (decision: rejected)" in again.output


def test_an_unlisted_approver_or_a_decided_version_is_refused_and_nothing_changes(pending: Path) -> None:
    before = registry.audit_trail("churn")
    stranger = cli("approve", "churn", "2", "--as", "mallory")
    assert stranger.exit_code == RegistryError.exit_code
    assert stranger.output.strip().splitlines() == [
        "error: 'mallory' is not an approver of churn (governance.approvers: ana, bo)"
    ]
    decided = cli("approve", "churn", "1", "--as", "ana")
    assert decided.exit_code == RegistryError.exit_code
    assert decided.output.strip().splitlines() == ["error: churn v1 is not waiting for approval (decision: promoted)"]
    assert registry.audit_trail("churn") == before and decision("2") == "pending" and champion() == "1"


def test_a_request_older_than_the_timeout_is_rejected_and_audited(pending: Path) -> None:
    spec = find_spec("churn")
    later = time.time() + 25 * 3600  # approval_timeout_hours: 24
    with pytest.raises(approvals.ApprovalRefused, match="waited longer than approval_timeout_hours"):
        approvals.answer(spec, "2", approvals.Answer("approve", "ana"), now=later)
    assert decision("2") == "rejected" and champion() == "1"
    assert registry.get_version("churn", "2").tags["conveyor.approval"] == "timed-out"
    assert registry.audit_trail("churn")[0]["outcome"] == audit.TIMED_OUT
    # Not yet due: nothing expires.
    assert approvals.expire_overdue(spec, now=time.time()) == []


def test_high_risk_needs_two_different_approvers(pending: Path) -> None:
    spec_path(pending, BETTER, HIGH)  # the same model, now high risk: a new version, v3
    result = training_flow(spec="churn")
    assert result["outcome"] == "pending" and "waits for 2 approval(s)" in result["reason"]
    version = result["version"]
    first = cli("approve", "churn", version, "--as", "ana")
    assert first.exit_code == 0 and "waits for 1 more" in first.output
    assert decision(version) == "pending" and champion() == "1"
    twice = cli("approve", "churn", version, "--as", "ana")
    assert twice.exit_code == RegistryError.exit_code
    assert "ana already approved churn" in twice.output
    second = cli("approve", "churn", version, "--as", "bo", "--comment", "second pair of eyes")
    assert second.exit_code == 0, second.output
    assert champion() == version
    assert registry.audit_trail("churn")[0]["actor"] == "ana, bo"


def test_a_champion_that_moved_while_the_approval_waited_is_rechecked(pending: Path) -> None:
    spec_path(pending, BEST)  # low risk: v3 (logistic regression) is promoted by its gates alone
    moved = training_flow(spec="churn")
    assert moved["outcome"] == "promoted" and champion() == moved["version"] == "3"
    spec_path(pending, BETTER, MEDIUM)
    done = cli("approve", "churn", "2", "--as", "ana")
    assert done.exit_code == 0, done.output
    assert decision("2") == "kept" and champion() == "3"
    assert "re-checked against v3" in registry.get_version("churn", "2").tags["conveyor.decision_reason"]


def test_rollback_moves_the_champion_back_scoring_follows_and_history_lists_it_all(pending: Path) -> None:
    assert cli("approve", "churn", "2", "--as", "ana", "--comment", "ok").exit_code == 0
    rows = write_csv(pending, "data/new.csv", classification_frame(rows=20, seed=9).drop(columns=["label"]))
    assert scoring_flow(model="churn", input_path=str(rows), output_path=str(pending / "a.parquet"))["version"] == "2"

    refused = cli("rollback", "churn", "--as", "bo")
    assert refused.exit_code != 0  # --reason is required
    done = cli("rollback", "churn", "--as", "bo", "--reason", "complaints from the call centre")
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "churn: champion v2 -> v1 (rolled back by bo: complaints from the call centre)"
    assert champion() == "1"
    assert scoring_flow(model="churn", input_path=str(rows), output_path=str(pending / "b.parquet"))["version"] == "1"
    assert registry.unaudited_champion("churn") is None

    history = cli("history", "churn")
    assert history.exit_code == 0, history.output
    lines = history.output.strip().splitlines()[1:]
    assert [line.split()[4] for line in lines] == ["rolled", "promoted", "approved", "pending", "promoted"], lines
    assert "bo" in lines[0] and "complaints from the call centre" in lines[0]
    assert "roc_auc" in lines[3] and "vs v1" in lines[3]  # the metrics compared when it was decided
    rows_json = audit.history("churn")
    assert rows_json[3].data_digest and rows_json[3].flow_run  # evidence: data digest, Prefect flow run
    table = registry.client().search_runs(
        [registry.client().get_experiment_by_name(registry.AUDIT_EXPERIMENT).experiment_id],
        filter_string="tags.`conveyor.history_of` = 'churn'",
    )
    assert len(table) == 1  # one history table per model in the MLflow UI


def test_the_rollback_deployment_refuses_a_version_still_waiting_for_sign_off(pending: Path) -> None:
    state = rollback_flow(model="churn", requested_by="bo", reason="skip the queue", to_version="2", return_state=True)
    assert state.is_failed()
    assert state.message.startswith("churn v2 never passed its gates and sign-off (decision: pending")
    assert champion() == "1" and decision("2") == "pending"
    done = rollback_flow(model="churn", requested_by="bo", reason="drill", to_version="2", force=True)
    assert done["champion"] == "2" and champion() == "2"


def test_a_version_that_never_passed_its_gates_needs_force(pending: Path) -> None:
    write_spec(
        pending, "churn", "../data/train.csv", model=WEAK, governance=MEDIUM, evaluation={"floors": {"roc_auc": 0.99}}
    )
    state = training_flow(spec="churn", return_state=True)
    assert state.is_failed()
    assert decision("3") == "rejected"
    refused = cli("rollback", "churn", "--to", "3", "--as", "bo", "--reason", "try it")
    assert refused.exit_code == RegistryError.exit_code
    assert refused.output.strip().splitlines()[0].startswith("error: churn v3 never passed its gates")
    assert champion() == "1"
    forced = cli("rollback", "churn", "--to", "3", "--as", "bo", "--reason", "incident drill", "--force")
    assert forced.exit_code == 0, forced.output
    assert champion() == "3"
    entry = registry.audit_trail("churn")[0]
    assert (entry["outcome"], entry["forced"], entry["actor"]) == (audit.ROLLED_BACK, "true", "bo")
