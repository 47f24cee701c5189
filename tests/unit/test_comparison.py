"""The champion is never scored on rows it trained on: an overfit champion would look perfect there."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from tasks.comparison import MIN_CLEAN_ROWS, fair_comparison, row_hashes
from tasks.evaluation import compute_metrics
from tests.factories import classification_frame


def frames(seed: int, rows: int) -> tuple[pd.DataFrame, pd.Series]:
    frame = classification_frame(rows=rows, seed=seed, noise=1.5)
    return frame[["x1", "x2"]], frame["label"]


def test_rows_the_champion_trained_on_are_left_out_of_both_scores() -> None:
    X_old, y_old = frames(0, 300)
    champion = DecisionTreeClassifier(random_state=0).fit(X_old, y_old)  # memorises its rows
    X_new, y_new = frames(1, 200)
    # The new holdout: 100 rows the champion trained on, 200 it never saw.
    X = pd.concat([X_old.iloc[:100], X_new], ignore_index=True)
    y = pd.concat([y_old.iloc[:100], y_new], ignore_index=True)
    candidate = LogisticRegression().fit(X_new, y_new)
    full = compute_metrics("binary", candidate, X, y)

    comparison = fair_comparison("binary", candidate, champion, X, y, full, row_hashes(X_old, y_old))

    assert comparison.overlap == 100 and comparison.rows == 200
    unseen = slice(100, None)
    expected = compute_metrics("binary", champion, X.iloc[unseen], y.iloc[unseen])
    assert comparison.champion == expected
    assert comparison.candidate == compute_metrics("binary", candidate, X.iloc[unseen], y.iloc[unseen])
    inflated = compute_metrics("binary", champion, X, y)
    assert inflated["accuracy"] > comparison.champion["accuracy"]  # what the overlap used to hide
    assert "100 rows it trained on left out" in comparison.note()


def test_without_overlap_or_stored_rows_the_whole_holdout_counts() -> None:
    X_old, y_old = frames(0, 200)
    champion = LogisticRegression().fit(X_old, y_old)
    X, y = frames(5, 150)
    full = compute_metrics("binary", champion, X, y)
    for rows in (None, row_hashes(X_old, y_old)):
        comparison = fair_comparison("binary", champion, champion, X, y, full, rows)
        assert comparison.overlap == 0 and comparison.rows == 150
        assert comparison.champion == full and comparison.note() == ""


def test_too_few_unseen_rows_compare_on_everything_and_say_so() -> None:
    X_old, y_old = frames(0, 300)
    champion = LogisticRegression().fit(X_old, y_old)
    X = X_old.iloc[: MIN_CLEAN_ROWS * 2].reset_index(drop=True)
    y = y_old.iloc[: MIN_CLEAN_ROWS * 2].reset_index(drop=True)
    full = compute_metrics("binary", champion, X, y)
    comparison = fair_comparison("binary", champion, champion, X, y, full, row_hashes(X_old, y_old))
    assert comparison.overlap == len(X)
    assert comparison.champion == full
    assert np.isfinite(comparison.champion["accuracy"])
    assert f"trained on {len(X)} of these holdout rows; too few others" in comparison.note()
