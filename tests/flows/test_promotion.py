"""Promotion is one idempotent step: races leave the better champion, a crash at any step is
finished by the rerun, a withheld promotion is granted by a later run. Real stores throughout."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import tasks.registry as promotion
from conveyor import registry
from conveyor.decision import Decision
from conveyor.spec import load_spec
from flows.training import training_flow
from tests.factories import copy_project, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")


class SimulatedCrash(BaseException):
    """Raised from the apply's checkpoint: the process 'dies' there (nothing of ours catches it)."""


@pytest.fixture
def champion_v1(project: Path, weak_churn_template: Path) -> Path:
    """A copy of the session's `churn` v1 (a depth-1 tree, champion); the data a stronger model will beat it on."""
    copy_project(weak_churn_template, project)
    return write_spec(project, "churn", "../data/train.csv", evaluation={"margin": 0.01})


def assert_consistent(name: str) -> None:
    """Every version decided; the champion is the newest promoted one; one audit entry per decision;
    no training run left RUNNING."""
    versions = registry.list_versions(name)
    assert all("conveyor.decision" in v.tags for v in versions), [dict(v.tags) for v in versions]
    promoted = [str(v.version) for v in versions if v.tags["conveyor.decision"] == "promoted"]
    assert str(registry.alias_version(name, registry.CHAMPION).version) == promoted[-1]
    trail = [(entry["version"], entry["outcome"]) for entry in registry.audit_trail(name)]
    assert sorted(trail) == sorted((str(v.version), v.tags["conveyor.decision"]) for v in versions)
    assert registry.training_runs(name, status="RUNNING") == []


@pytest.mark.parametrize("step", promotion.STEPS)
def test_a_crash_at_any_step_is_finished_by_the_rerun(
    step: str, champion_v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(at: str) -> None:
        if at == step:
            raise SimulatedCrash(at)

    monkeypatch.setattr(promotion, "CHECKPOINT", crash)
    with pytest.raises(SimulatedCrash):
        training_flow(spec=str(champion_v1))
    monkeypatch.setattr(promotion, "CHECKPOINT", lambda at: None)

    result = training_flow(spec=str(champion_v1))
    assert result["outcome"] == "promoted", result["reason"]
    assert len(registry.list_versions("churn")) == 2  # v1 and exactly one candidate
    assert str(registry.alias_version("churn", registry.CHAMPION).version) == result["version"]
    assert_consistent("churn")
    if step == "decision":  # the job was done before the crash: nothing left to do
        assert result["reused"] is True


def test_withheld_promotion_is_granted_by_a_normal_rerun(champion_v1: Path) -> None:
    held = training_flow(spec=str(champion_v1), allow_promotion=False)
    assert held["outcome"] == "kept" and "promotion not allowed" in held["reason"]
    assert str(registry.alias_version("churn", registry.CHAMPION).version) == "1"
    granted = training_flow(spec=str(champion_v1))
    assert granted["outcome"] == "promoted" and granted["version"] == held["version"]
    assert str(registry.alias_version("churn", registry.CHAMPION).version) == held["version"]
    assert [e["outcome"] for e in registry.audit_trail("churn")] == ["promoted", "kept", "promoted"]


def test_a_reused_rejected_version_fails_again(champion_v1: Path) -> None:
    from conveyor.errors import GateNotMet

    spec = write_spec(
        champion_v1.parent.parent,
        "churn",
        "../data/train.csv",
        model={"estimator": "sklearn.dummy.DummyClassifier"},
        evaluation={"floors": {"roc_auc": 0.7}},
    )
    for _ in range(2):
        with pytest.raises(GateNotMet, match="rejected"):
            training_flow(spec=str(spec))
    assert len(registry.list_versions("churn")) == 2


def _register_copy_of_v1(run_name: str) -> promotion.Registered:
    """Another real version of churn (v1's logged model registered again from a new run)."""
    v1 = registry.get_version("churn", "1")
    run_id = registry.start_run("churn", run_name=run_name, tags={"conveyor.kind": "test"})
    version = registry.register_version("churn", v1.source, run_id, {}, model_id=v1.source.removeprefix("models:/"))
    registry.end_run(run_id)
    return promotion.Registered(str(version.version), run_id, v1.source)


def test_two_promotions_racing_leave_the_better_champion_and_audit_both(champion_v1: Path) -> None:
    spec = load_spec(champion_v1).for_task("binary")
    scores = {"1": {"roc_auc": 0.80}}
    better, worse = _register_copy_of_v1("better"), _register_copy_of_v1("worse")
    scores[better.version], scores[worse.version] = {"roc_auc": 0.95}, {"roc_auc": 0.90}
    barrier = threading.Barrier(2)
    outcomes: dict[str, Decision] = {}

    def promote(candidate: promotion.Registered) -> None:
        plan = Decision("promoted", "beats v1")
        barrier.wait()
        outcomes[candidate.version] = promotion.apply_promotion(
            spec, candidate, plan, "1", scores[candidate.version], lambda v: scores[v], True
        )

    threads = [threading.Thread(target=promote, args=(c,)) for c in (worse, better)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert str(registry.alias_version("churn", registry.CHAMPION).version) == better.version
    assert outcomes[better.version].outcome == "promoted"
    audited = {(e["version"], e["outcome"]) for e in registry.audit_trail("churn")}
    assert (better.version, "promoted") in audited
    assert (worse.version, outcomes[worse.version].outcome) in audited
