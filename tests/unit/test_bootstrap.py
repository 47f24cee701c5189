"""Bootstrap confidence intervals of the holdout metrics (tasks/evaluation.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.evaluation import bootstrap_intervals, metrics_from_predictions, resampled_metrics


def binary_case(rows: int, seed: int, correct: float = 0.8) -> tuple[pd.Series, np.ndarray]:
    """Labels and probabilities whose predicted class is right with probability `correct`;
    scores rounded to one decimal, so ties are common."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, rows)
    right = rng.uniform(size=rows) < correct
    confidence = np.round(rng.uniform(0.55, 1.0, rows), 1)
    p_yes = np.where((truth == 1) == right, confidence, 1 - confidence)
    return pd.Series(np.where(truth == 1, "yes", "no")), np.column_stack([1 - p_yes, p_yes])


def cases() -> list[tuple[str, list | None, pd.Series, np.ndarray]]:
    rng = np.random.default_rng(7)
    y, output = binary_case(150, 1)
    regression = pd.Series(rng.normal(size=150))
    return [
        ("binary", ["no", "yes"], y, output),
        ("multiclass", ["a", "b", "c"], pd.Series(rng.choice(["a", "b", "c"], 150)), rng.dirichlet([1, 1, 1], 150)),
        ("regression", None, regression, regression.to_numpy() + rng.normal(scale=0.5, size=150)),
    ]


@pytest.mark.parametrize(("task_type", "classes", "y", "output"), cases(), ids=["binary", "multiclass", "regression"])
def test_each_resample_scores_as_scikit_learn_scores_the_drawn_rows(task_type, classes, y, output) -> None:
    rng = np.random.default_rng(0)
    drawn = [rng.integers(0, len(y), len(y)) for _ in range(6)]
    weights = np.stack([np.bincount(rows, minlength=len(y)) for rows in drawn]).astype(float)
    at_once = resampled_metrics(task_type, classes, y, output, weights)
    for b, rows in enumerate(drawn):
        expected = metrics_from_predictions(task_type, classes, y.iloc[rows].reset_index(drop=True), output[rows])
        expected.pop("roc_auc") if task_type == "multiclass" else None  # not resampled for multiclass
        assert expected.keys() == at_once.keys()
        for name, value in expected.items():
            assert at_once[name][b] == pytest.approx(value, abs=1e-12), name


def test_the_interval_covers_the_true_accuracy_about_95_times_in_100() -> None:
    covered = 0
    for seed in range(40):
        y, output = binary_case(300, seed, correct=0.8)
        low, high = bootstrap_intervals("binary", ["no", "yes"], y, output, seed=seed)["accuracy"]
        covered += low <= 0.8 <= high
    assert covered >= 34  # 95 % expected; 34 of 40 or fewer happens with probability under 3 %


def test_the_interval_narrows_as_rows_grow() -> None:
    widths = []
    for rows in (200, 800, 3200):
        y, output = binary_case(rows, 5)
        low, high = bootstrap_intervals("binary", ["no", "yes"], y, output, seed=0)["roc_auc"]
        widths.append(high - low)
    # The width shrinks like 1/sqrt(rows): halves for four times the rows.
    assert 0.35 < widths[1] / widths[0] < 0.7 and 0.35 < widths[2] / widths[1] < 0.7


def test_seeded_and_silent_about_what_it_cannot_measure() -> None:
    y, output = binary_case(200, 2)
    assert bootstrap_intervals("binary", ["no", "yes"], y, output, seed=4) == bootstrap_intervals(
        "binary", ["no", "yes"], y, output, seed=4
    )
    one_class = pd.Series(["yes"] * 50)
    intervals = bootstrap_intervals("binary", ["no", "yes"], one_class, output[:50], seed=0)
    assert "roc_auc" not in intervals and "accuracy" in intervals  # no negatives: AUC is undefined
