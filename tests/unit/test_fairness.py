"""Fairness per group and the fairness gate (tasks/fairness.py), the card's HTML (tasks/card.py),
and what `exclude_sensitive` means for features and scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate_difference,
    true_positive_rate_difference,
)

from conveyor.decision import Decision
from conveyor.errors import DataError
from conveyor.spec import FairnessGate, parse_spec
from tasks.card import approvals_section, card_html
from tasks.data import feature_frame
from tasks.fairness import fairness_by_group, fairness_gate, holdout_groups
from tasks.scoring.contract import expected_columns
from tasks.scoring.model import ServingModel

DPD = FairnessGate(metric="demographic_parity_difference", max=0.1)


def proba(p_yes: list[float]) -> np.ndarray:
    p = np.asarray(p_yes, dtype=float)
    return np.column_stack([1 - p, p])


# Eight rows, worked by hand. Group a: truth yes yes no no, predicted yes yes yes no;
# group b: truth yes no no, predicted yes no no; one row without a group: truth no, predicted no.
TRUTH = pd.Series(["yes", "yes", "no", "no", "yes", "no", "no", "no"])
OUTPUT = proba([0.9, 0.8, 0.7, 0.1, 0.6, 0.2, 0.3, 0.4])
GROUPS = pd.DataFrame({"g": ["a", "a", "a", "a", "b", "b", "b", None]})


def test_rates_and_disparities_per_group_by_hand() -> None:
    report = fairness_by_group("binary", ["no", "yes"], TRUTH, OUTPUT, GROUPS, min_rows=1)
    (item,) = report.attributes
    by_group = {g["group"]: g for g in item.groups}
    assert list(by_group) == ["a", "b", "(missing)"]  # largest first; missing values a group of their own
    assert by_group["a"] | {} == {
        "group": "a",
        "rows": 4,
        "selection_rate": 0.75,  # 3 of 4 predicted yes
        "true_positive_rate": 1.0,  # 2 of 2 yes found
        "false_positive_rate": 0.5,  # 1 of 2 no flagged
        "accuracy": 0.75,
    }
    assert by_group["b"]["selection_rate"] == pytest.approx(1 / 3)
    assert (by_group["b"]["true_positive_rate"], by_group["b"]["false_positive_rate"]) == (1.0, 0.0)
    assert np.isnan(by_group["(missing)"]["true_positive_rate"])  # no positive row: undefined, not 0
    assert item.disparities == {
        "demographic_parity_difference": 0.75,  # a 0.75 against (missing) 0
        "true_positive_rate_difference": 0.0,
        "false_positive_rate_difference": 0.5,
        "equalized_odds_difference": 0.5,
    }
    assert report.positive == "yes"
    metrics = report.mlflow_metrics()
    assert metrics["fairness.g.demographic_parity_difference"] == 0.75
    assert metrics["fairness.g._missing_.rows"] == 1
    assert "fairness.g._missing_.true_positive_rate" not in metrics  # NaN is not logged


def test_disparities_match_fairlearn() -> None:
    rng = np.random.default_rng(0)
    truth = pd.Series(rng.choice(["no", "yes"], 300))
    output = proba(rng.uniform(size=300).tolist())
    groups = pd.DataFrame({"g": rng.choice(["x", "y", "z"], 300)})
    (item,) = fairness_by_group("binary", ["no", "yes"], truth, output, groups, min_rows=1).attributes
    y, predicted, sensitive = truth == "yes", output[:, 1] > 0.5, groups["g"]
    assert item.disparities == pytest.approx(
        {
            "demographic_parity_difference": demographic_parity_difference(y, predicted, sensitive_features=sensitive),
            "true_positive_rate_difference": true_positive_rate_difference(y, predicted, sensitive_features=sensitive),
            "false_positive_rate_difference": false_positive_rate_difference(
                y, predicted, sensitive_features=sensitive
            ),
            "equalized_odds_difference": equalized_odds_difference(y, predicted, sensitive_features=sensitive),
        }
    )


def test_regression_error_gap_and_multiclass_accuracy_by_hand() -> None:
    truth = pd.Series([0.0, 0.0, 1.0, 1.0, 1.0])
    predicted = np.array([1.0, -1.0, 1.0, 3.0, 5.0])  # errors a: 1, 1 (MAE 1); b: 0, 2, 4 (MAE 2)
    groups = pd.DataFrame({"g": ["a", "a", "b", "b", "b"]})
    (item,) = fairness_by_group("regression", None, truth, predicted, groups, min_rows=1).attributes
    assert {g["group"]: g["mae"] for g in item.groups} == {"b": 2.0, "a": 1.0}
    assert item.disparities == {"error_difference": 1.0}

    labels = pd.Series(["x", "y", "z", "x"])
    output = np.eye(3)[[0, 1, 0, 0]]  # predicted x y x x: group a right twice, group b right once of two
    (item,) = fairness_by_group(
        "multiclass", ["x", "y", "z"], labels, output, pd.DataFrame({"g": ["a", "a", "b", "b"]}), min_rows=1
    ).attributes
    assert {g["group"]: g["accuracy"] for g in item.groups} == {"a": 1.0, "b": 0.5}
    assert item.disparities == {"accuracy_difference": 0.5}


def test_small_groups_are_shown_but_not_gated_on() -> None:
    report = fairness_by_group("binary", ["no", "yes"], TRUTH, OUTPUT, GROUPS, min_rows=3)
    (item,) = report.attributes
    assert item.small == ["(missing)"] and len(item.groups) == 3
    assert item.disparities["demographic_parity_difference"] == pytest.approx(0.75 - 1 / 3)
    decision = fairness_gate(Decision("promoted", "beats the champion"), DPD, report)
    assert decision == Decision(
        "rejected",
        "fairness: demographic_parity_difference 0.417 on 'g' is over the limit 0.1 "
        "(selection_rate a 0.75, b 0.333; groups under 3 rows left out: (missing))",
    )


def test_a_gate_that_cannot_be_measured_rejects_and_says_why() -> None:
    report = fairness_by_group("binary", ["no", "yes"], TRUTH, OUTPUT, GROUPS, min_rows=4)
    decision = fairness_gate(Decision("promoted", "no champion"), DPD, report)
    assert decision.outcome == "rejected"
    assert decision.reason == (
        "fairness: demographic_parity_difference on 'g' could not be measured: fewer than two groups with at "
        "least 4 holdout rows (a: 4, b: 3, (missing): 1)"
    )


def test_the_worst_attribute_counts_and_a_fair_model_passes() -> None:
    groups = GROUPS.assign(h=["p", "q"] * 4)  # h: p 0.75 (3 of 4 predicted yes), q 0.25
    report = fairness_by_group("binary", ["no", "yes"], TRUTH, OUTPUT, groups, min_rows=1)
    failures = fairness_gate(Decision("rejected", "roc_auc 0.5 is below the floor 0.7"), DPD, report).reason
    assert failures.startswith(
        "roc_auc 0.5 is below the floor 0.7; fairness: demographic_parity_difference 0.75 on 'g'"
    )
    assert "; fairness: demographic_parity_difference 0.5 on 'h'" in failures
    lenient = FairnessGate(metric="demographic_parity_difference", max=0.8)
    kept = Decision("kept", "not better than the champion")
    assert fairness_gate(kept, lenient, report) is kept
    assert fairness_gate(kept, None, report) is kept


def spec(**governance: object):
    return parse_spec(
        {
            "name": "offers",
            "data": {"path": "data.csv", "target": "label", "id_column": "row_id"},
            "governance": {"sensitive_attributes": ["group"], **governance},
        }
    )


def test_exclude_sensitive_keeps_the_attribute_out_of_features_not_out_of_the_groups() -> None:
    frame = pd.DataFrame({"row_id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "group": ["a", None, "b"], "label": [0, 1, 0]})
    assert list(feature_frame(spec(), frame).columns) == ["x", "group"]
    assert list(feature_frame(spec(exclude_sensitive=True), frame).columns) == ["x"]
    groups = holdout_groups(spec(exclude_sensitive=True), frame, pd.Index([1, 2]))
    assert groups["group"].fillna("?").tolist() == ["?", "b"]
    with pytest.raises(DataError, match=r"governance.sensitive_attributes: column 'group' is not in the data"):
        holdout_groups(spec(), frame.drop(columns="group"), pd.Index([0]))


def test_scoring_without_a_contract_accepts_but_does_not_require_an_excluded_attribute() -> None:
    model = ServingModel("offers", "1", None, "binary", ("x",), (), (0, 1), model=None)
    required, optional, _ = expected_columns(spec(exclude_sensitive=True), model, None)
    assert (required, optional) == (["row_id", "x"], ["group"])
    required, optional, _ = expected_columns(spec(), model, None)
    assert "group" not in optional


def test_card_html_renders_tables_and_escapes_what_people_typed() -> None:
    section = approvals_section(
        [{"approver": "ana", "decision": "approve", "comment": "ok | <b>fine</b>\nshipped", "time": "2026-11-30"}]
    )
    page = card_html(f"# Model card: offers\n\n{section}")
    assert "<title>Model card: offers</title>" in page
    assert "<th>approver</th>" in page
    assert "<td>ok | &lt;b&gt;fine&lt;/b&gt; shipped</td>" in page  # one cell, markup shown as text
    assert "<b>" not in page
    assert approvals_section([]) == "## Approvals\n\nNone recorded.\n"
