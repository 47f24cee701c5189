import numpy as np
import pandas as pd
import pytest

from tasks.evaluation import evaluate, metrics_from_predictions, prediction_frame


def test_binary_metrics_by_hand() -> None:
    y = pd.Series(["no", "no", "yes", "yes"])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    result = metrics_from_predictions("binary", ["no", "yes"], y, proba)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(1.0)
    # Positives score 0.65 and 0.8, negatives 0.1 and 0.6: every positive outranks every negative.
    assert result["roc_auc"] == pytest.approx(1.0)


def test_regression_metrics_by_hand() -> None:
    result = metrics_from_predictions("regression", None, pd.Series([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert result["mae"] == pytest.approx(2 / 3)
    assert result["rmse"] == pytest.approx(np.sqrt(4 / 3))


def test_evaluate_gives_plots_and_importance_for_the_signal_feature() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"signal": rng.normal(size=300), "noise": rng.normal(size=300)})
    y = pd.Series(np.where(X["signal"] > 0, "a", "b"))
    model = LogisticRegression().fit(X, y)
    result = evaluate("binary", model, X, y)
    assert set(result.plots) == {"confusion_matrix.png", "roc_curve.png", "precision_recall.png"}
    assert all(content.startswith(b"\x89PNG") for content in result.plots.values())
    assert list(result.importance)[0] == "signal"
    assert result.importance["signal"] > result.importance["noise"]


def _coded(kind: str, positive: np.ndarray) -> pd.Series:
    """One binary truth, coded the ways CSV files code it."""
    codes = {
        "int01": (1, 0),
        "int12": (2, 1),
        "bool": (True, False),
        "float": (1.0, 0.0),
        "text": ("yes", "no"),
    }[kind]
    return pd.Series(np.where(positive, codes[0], codes[1]))


@pytest.mark.parametrize("kind", ["int01", "int12", "bool", "float", "text"])
def test_binary_target_coded_any_way_gets_metrics_and_plots(kind: str) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"signal": rng.normal(size=200)})
    y = _coded(kind, (X["signal"] + rng.normal(scale=0.5, size=200) > 0).to_numpy())
    model = LogisticRegression().fit(X, y)
    result = evaluate("binary", model, X, y)
    # The same figures as for the text-coded labels: coding must not change the score.
    text = _coded("text", (y == y.max()).to_numpy())
    reference = metrics_from_predictions("binary", ["no", "yes"], text, model.predict_proba(X))
    assert result.metrics == pytest.approx(reference)
    assert set(result.plots) == {"confusion_matrix.png", "roc_curve.png", "precision_recall.png"}
    predictions = prediction_frame("binary", model, X)
    assert set(predictions["prediction"]) == set(y)
    assert predictions["prediction"].dtype == y.dtype


@pytest.mark.parametrize("codes", [[0, 1, 2], [1.0, 2.0, 3.0], ["a", "b", "c"]])
def test_multiclass_target_coded_any_way_gets_metrics_and_plots(codes: list) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(2)
    X = pd.DataFrame({"signal": rng.normal(size=300)})
    bucket = np.digitize(X["signal"] + rng.normal(scale=0.3, size=300), [-0.5, 0.5])
    y = pd.Series(np.asarray(codes, dtype=object if isinstance(codes[0], str) else None)[bucket])
    model = LogisticRegression().fit(X, y)
    result = evaluate("multiclass", model, X, y)
    assert 0.5 < result.metrics["accuracy"] <= 1
    assert 0.5 < result.metrics["roc_auc"] <= 1
    assert set(result.plots) == {"confusion_matrix.png"}


def test_plots_are_drawn_without_pyplot() -> None:
    """scikit-learn's Display classes import matplotlib.pyplot, about a second of every training
    process here: the plots are drawn on matplotlib's Figure instead."""
    import subprocess
    import sys

    script = """
import sys
import numpy as np, pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression
from tasks.evaluation import evaluation_plots
rng = np.random.default_rng(0)
X = pd.DataFrame({"signal": rng.normal(size=200)})
y = pd.Series(np.where(X["signal"] > 0, "yes", "no"))
binary = evaluation_plots("binary", ["no", "yes"], y, LogisticRegression().fit(X, y).predict_proba(X))
numbers = X["signal"] * 2
residuals = evaluation_plots("regression", None, numbers, LinearRegression().fit(X, numbers).predict(X))
assert sorted(binary) == ["confusion_matrix.png", "precision_recall.png", "roc_curve.png"], sorted(binary)
assert list(residuals) == ["residuals.png"]
assert all(png.startswith(b"\\x89PNG") for png in [*binary.values(), *residuals.values()])
assert "matplotlib.pyplot" not in sys.modules
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
