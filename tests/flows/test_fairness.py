"""Fairness and the model card through the training flow (Prefect harness, real SQLite MLflow).

Two synthetic sets: in the biased one the label depends on the sensitive attribute `group` (and
the model sees it), in the fair one it does not (and `exclude_sensitive` keeps it out of the
features). A few rows have no group: they form a group of their own, too small to gate on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from conveyor import predictions, registry
from conveyor.errors import GateNotMet
from conveyor.spec import find_spec
from flows.scoring import scoring_flow
from flows.training import training_flow
from tasks.data import split_frame
from tests.factories import project_home, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

GATE = {"metric": "demographic_parity_difference", "max": 0.2}
INTENDED = "Rank <script>alert(1)</script> renewal offers; not for credit decisions"


def fairness_frame(rows: int = 800, seed: int = 3, bias: float = 0.0) -> pd.DataFrame:
    """Binary `label` from x1 and x2, plus `bias` in favour of group a; 15 rows without a group."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    group = rng.choice(["a", "b"], size=rows).astype(object)
    signal = 1.5 * x1 - x2 + bias * np.where(group == "a", 1.0, -1.0) + rng.normal(scale=0.5, size=rows)
    group[rng.choice(rows, 15, replace=False)] = None
    return pd.DataFrame(
        {"row_id": np.arange(rows), "x1": x1.round(4), "x2": x2.round(4), "group": group, "label": signal > 0}
    ).assign(label=lambda f: np.where(f["label"], "yes", "no"))


def governance(**extra: object) -> dict:
    return {
        "sensitive_attributes": ["group"],
        "fairness": GATE,
        "intended_use": INTENDED,
        "owner": "risk-team@example.com",
        **extra,
    }


@pytest.fixture(scope="module")
def fair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """A fair model trained once with `exclude_sensitive`, and what the flow returned."""
    with project_home(tmp_path_factory.mktemp("fair")) as root:
        write_csv(root, "data/train.csv", fairness_frame())
        spec = write_spec(root, "offers", "../data/train.csv", governance=governance(exclude_sensitive=True))
        yield root, training_flow(spec=str(spec))


def run_of(version: str = "1") -> str:
    return registry.get_version("offers", version).run_id


def holdout(root: Path) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """The flow's holdout (same spec, same seed): features, labels and groups."""
    spec = find_spec(str(root / "pipelines" / "offers.yaml")).for_task("binary")
    frame = pd.read_csv(root / "data" / "train.csv")
    split = split_frame(spec, frame)
    return split.X_test, split.y_test, frame.loc[split.X_test.index, "group"].fillna("(missing)")


def test_the_fairness_gate_rejects_a_model_trained_on_biased_data(project: Path) -> None:
    write_csv(project, "data/train.csv", fairness_frame(bias=3.0))
    spec = write_spec(project, "offers", "../data/train.csv", governance=governance())

    with pytest.raises(GateNotMet) as refused:
        training_flow(spec=str(spec))

    message = str(refused.value)
    assert "offers v1 rejected: fairness: demographic_parity_difference" in message
    assert "on 'group' is over the limit 0.2 (selection_rate a " in message
    assert "groups under 20 rows left out: (missing)" in message
    assert registry.alias_version("offers", registry.CHAMPION) is None
    version = registry.get_version("offers", "1")
    assert version.tags["conveyor.decision"] == "rejected"
    # The value in the reason is the one fairlearn gives for the registered model on the holdout.
    X, y, groups = holdout(project)
    model = registry.load_model("offers", "1")
    large = groups != "(missing)"
    expected = demographic_parity_difference(
        y[large] == "yes", model.predict(X[large]) == "yes", sensitive_features=groups[large]
    )
    assert expected > 0.5
    assert f"demographic_parity_difference {expected:.3g} on 'group'" in message
    assert registry.client().get_run(version.run_id).data.metrics[
        "fairness.group.demographic_parity_difference"
    ] == pytest.approx(expected)


def test_a_fair_model_passes_the_gate_without_the_attribute_among_its_features(fair: tuple[Path, dict]) -> None:
    root, result = fair
    assert result["outcome"] == "promoted", result
    model = registry.load_model("offers", "1")
    assert "group" not in model.feature_names_in_
    assert set(model.feature_names_in_) == {"x1", "x2"}

    metrics = registry.client().get_run(run_of()).data.metrics
    X, y, groups = holdout(root)
    predicted = model.predict(X) == "yes"
    large = (groups != "(missing)").to_numpy()
    truth = (y == "yes").to_numpy()
    dpd = demographic_parity_difference(truth[large], predicted[large], sensitive_features=groups[large])
    eod = equalized_odds_difference(truth[large], predicted[large], sensitive_features=groups[large])
    assert metrics["fairness.group.demographic_parity_difference"] == pytest.approx(dpd) and dpd <= GATE["max"]
    assert metrics["fairness.group.equalized_odds_difference"] == pytest.approx(eod)
    for name in ("a", "b", "_missing_"):  # every group, the small one included, per metric
        rows = groups.str.replace("(missing)", "_missing_", regex=False) == name
        assert metrics[f"fairness.group.{name}.rows"] == rows.sum()
        assert metrics[f"fairness.group.{name}.selection_rate"] == pytest.approx(predicted[rows].mean())


def test_the_card_carries_intervals_importance_and_fairness(fair: tuple[Path, dict]) -> None:
    root, _ = fair
    run_id = run_of()
    markdown = registry.artifact_text(run_id, "model_card.md")
    page = registry.artifact_text(run_id, "model_card.html")
    metrics = registry.client().get_run(run_id).data.metrics

    assert "- Owner: risk-team@example.com" in markdown
    assert "| metric | candidate | 95 % CI | champion |" in markdown
    line = next(row for row in markdown.splitlines() if row.startswith("| roc_auc |"))
    _, value, interval, _ = (part.strip() for part in line.strip("|").split("|"))
    low, high = (float(bound) for bound in interval.split(" – "))
    assert low < float(value) < high and float(value) == pytest.approx(metrics["roc_auc"], abs=1e-4)
    assert high - low < 0.2
    assert "## Permutation importance" in markdown and "| `x1` |" in markdown and "| `group` |" not in markdown
    assert "left out of the model's features (`exclude_sensitive`)" in markdown
    assert "| group | rows | selection_rate | true_positive_rate | false_positive_rate | accuracy | note |" in markdown
    missing_row = next(row for row in markdown.splitlines() if row.startswith("| (missing) |"))
    assert missing_row.endswith("| too few rows |")  # 15 rows in all, fewer in the holdout: not gated on
    assert f"- demographic_parity_difference: {metrics['fairness.group.demographic_parity_difference']:.4f}" in markdown
    assert "Contract digest" in markdown and "rows pass the contract" in markdown
    assert "**promoted**" in markdown

    # The HTML copy: tables as tables, the spec's text escaped, never markup.
    assert page.startswith("<!DOCTYPE html>") and "<title>Model card: offers</title>" in page
    assert "<th>95 % CI</th>" in page and "<td>(missing)</td>" in page and "<td>too few rows</td>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_scoring_accepts_the_excluded_attribute_and_ignores_it(
    fair: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = fair
    monkeypatch.setenv("CONVEYOR_HOME", str(root))
    monkeypatch.setenv(predictions.PREDICTION_LOG_ENV, str(root / f"log-{uuid.uuid4().hex[:8]}"))
    source = root / "incoming" / "new.csv"
    source.parent.mkdir(exist_ok=True)
    rows = fairness_frame(rows=60, seed=9).drop(columns="label").dropna()
    rows.to_csv(source, index=False)
    output = root / "out" / "scores.csv"

    scoring_flow(model="offers", input_path=str(source), output_path=str(output))

    scores = pd.read_csv(output)
    assert len(scores) == len(rows)
    expected = registry.load_model("offers", "1").predict_proba(rows[["x1", "x2"]])[:, 1]
    assert scores["proba_yes"].to_numpy() == pytest.approx(expected, abs=1e-9)
