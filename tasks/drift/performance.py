"""Real performance over time: the holdout's metrics, per time window, on the rows whose label arrived.

One metrics implementation for the holdout and for live windows (`tasks.evaluation`), so a live
figure and the holdout figure it is compared with mean the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from conveyor.errors import DataError
from conveyor.spec import METRICS, TaskType
from tasks.drift.stats import category_key, numeric_values
from tasks.evaluation import metrics_from_predictions

PROBA = "proba_"
DEFAULT_METRICS = {
    "binary": ("accuracy", "f1_macro", "roc_auc"),
    "multiclass": ("accuracy", "f1_macro", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
# Metrics that need probabilities: undefined when the log holds only the predicted class.
_PROBABILISTIC = {"roc_auc", "log_loss", "average_precision"}
# Scale-bound metrics: a tolerance is relative to the holdout value, not absolute.
_RELATIVE = {"rmse", "mae"}


def performance_over_time(
    joined: pd.DataFrame,
    task: str,
    window: str = "1D",
    time_column: str = "scored_at",
    label_column: str = "label",
    prediction_column: str = "prediction",
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Real metrics per time window over the rows whose ground truth has arrived.

    One row per window that scored anything: `window` (its start), `rows` scored, `labelled`
    rows, then `metrics` (default: accuracy, f1_macro and roc_auc for classifiers, rmse, mae and
    r2 for regressors), computed as on the holdout. Windows without labels have NaN metrics.
    """
    for column in (time_column, label_column, prediction_column):
        if column not in joined.columns:
            raise DataError(f"performance: column {column!r} is not in the joined prediction log")
    if task not in DEFAULT_METRICS:
        raise ValueError(f"performance: unknown task {task!r}")
    names = list(dict.fromkeys(metrics or DEFAULT_METRICS[task]))
    frame = joined.assign(**{time_column: pd.to_datetime(joined[time_column])})
    records = []
    for start, group in frame.groupby(pd.Grouper(key=time_column, freq=window)):
        if group.empty:
            continue
        labelled = group[group[label_column].notna()]
        figures = window_metrics(labelled, task, label_column, prediction_column) if len(labelled) else {}
        record: dict[str, Any] = {"window": start, "rows": len(group), "labelled": len(labelled)}
        record.update({name: figures.get(name, math.nan) for name in names})
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["window", "rows", "labelled", *names])


def window_metrics(labelled: pd.DataFrame, task: str, label: str, prediction: str) -> dict[str, float]:
    """The holdout's metrics (`tasks.evaluation.metrics_from_predictions`) on labelled log rows.

    Labels and classes are compared as text, so 1, 1.0 (a label column widened by nulls) and '1'
    are one class. A label the model never predicts counts with probability 0.
    """
    if task == "regression":
        truth = pd.Series(numeric_values(labelled[label]))
        figures = metrics_from_predictions("regression", None, truth, numeric_values(labelled[prediction]))
        if len(labelled) < 2:
            figures["r2"] = math.nan  # undefined on one row
        return figures
    truth = pd.Series(_class_strings(labelled[label]))
    proba_columns = [str(c) for c in labelled.columns if str(c).startswith(PROBA)]
    if proba_columns:
        classes = [c[len(PROBA) :] for c in proba_columns]
        proba = labelled[proba_columns].to_numpy(dtype="float64")
    else:  # only the predicted class was logged: one-hot, and no probability-based metric
        predicted = _class_strings(labelled[prediction])
        classes = sorted(set(predicted))
        proba = (predicted[:, None] == np.asarray(classes, dtype=object)[None, :]).astype("float64")
    unseen = sorted(set(truth) - set(classes))
    if unseen:
        classes = [*classes, *unseen]
        proba = np.hstack([proba, np.zeros((len(proba), len(unseen)))])
    figures = metrics_from_predictions(cast(TaskType, task), classes, truth, proba)
    if not proba_columns:
        figures = {name: value for name, value in figures.items() if name not in _PROBABILISTIC}
    return figures


def degradation(
    metric: str, holdout: Mapping[str, float], performance: pd.DataFrame | None, tolerance: float
) -> dict[str, Any] | None:
    """The latest labelled window's `metric`, when it is worse than the holdout's by more than the
    tolerance (relative for scale-bound metrics like rmse, absolute otherwise); else None."""
    if performance is None or metric not in performance.columns or metric not in holdout:
        return None
    measured = performance.dropna(subset=[metric])
    if measured.empty:
        return None
    latest = measured.iloc[-1]
    value, reference = float(latest[metric]), float(holdout[metric])
    greater = METRICS[metric][1]
    if metric in _RELATIVE:
        worse = value > reference * (1 + tolerance)
    else:
        worse = value < reference - tolerance if greater else value > reference + tolerance
    if not worse:
        return None
    return {
        "metric": metric,
        "value": value,
        "holdout": reference,
        "tolerance": tolerance,
        "window": str(latest["window"]),
        "labelled": int(latest.get("labelled", 0)),
    }


def _class_strings(series: pd.Series) -> np.ndarray:
    """Labels as text, so 1, 1.0 and '1' compare equal."""
    return np.array([category_key(v) for v in series.to_numpy()], dtype=object)
