"""Score a fitted pipeline on the holdout: metrics, plots and permutation importance."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn import metrics as skm
from sklearn.inspection import permutation_importance

from conveyor.spec import TaskType

# Permutation importance repeats predictions per feature: cap the rows it sees.
_IMPORTANCE_ROWS = 2000
# Bootstrap confidence intervals: resamples of the holdout, and the most weight cells held at once.
BOOTSTRAP_RESAMPLES = 200
_BOOTSTRAP_CELLS = 2_000_000
# Above this many holdout rows the intervals come from a seeded sample of them: a little wider than
# the whole holdout's (so on the safe side), at a bounded cost (about a second at 200 resamples).
BOOTSTRAP_ROWS = 10_000


@dataclass
class Evaluation:
    metrics: dict[str, float]
    importance: dict[str, float] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # bootstrap 95 % per metric


def label_array(values: Any, like: np.ndarray | None = None) -> np.ndarray:
    """Labels as a typed array (int, bool, float or text), never an object array of numbers.

    scikit-learn cannot tell the target type of an object array holding numbers or booleans
    ("unknown is not supported"); `like` (the model's classes) gives the dtype to cast to.
    """
    array = np.asarray(values)
    if array.dtype == object:
        array = pd.Series(array).infer_objects().to_numpy()
    if array.dtype == object and like is not None and like.dtype != object:
        array = array.astype(like.dtype)
    return array


def predicted_labels(classes: Any, proba: np.ndarray) -> np.ndarray:
    """The most probable class of each row, typed like the classes."""
    return label_array(classes)[proba.argmax(axis=1)]


def predict(task_type: TaskType, model: Any, X: pd.DataFrame) -> np.ndarray:
    """Class probabilities for classifiers, values for regressors: one pass over the rows."""
    return model.predict(X) if task_type == "regression" else model.predict_proba(X)


def metrics_from_predictions(
    task_type: TaskType, classes: list[Any] | None, y: pd.Series, output: np.ndarray
) -> dict[str, float]:
    """The task's standard metrics from the truth and one prediction pass."""
    if task_type == "regression":
        return {
            "rmse": float(skm.root_mean_squared_error(y, output)),
            "mae": float(skm.mean_absolute_error(y, output)),
            "r2": float(skm.r2_score(y, output)),
        }
    assert classes is not None
    proba = output
    labels = label_array(classes)
    predicted = predicted_labels(labels, proba)
    truth = label_array(y, like=labels)
    result = {
        "accuracy": float(skm.accuracy_score(truth, predicted)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(truth, predicted)),
        "f1_macro": float(skm.f1_score(truth, predicted, average="macro")),
        "log_loss": float(skm.log_loss(truth, proba, labels=labels)),
    }
    present = set(pd.unique(truth))
    if task_type == "binary":
        positive = labels[1]
        binary_truth = truth == positive
        result |= {
            "f1": float(skm.f1_score(binary_truth, predicted == positive)),
            "precision": float(skm.precision_score(binary_truth, predicted == positive, zero_division=0)),
            "recall": float(skm.recall_score(binary_truth, predicted == positive)),
        }
        if len(present) == 2:
            result["roc_auc"] = float(skm.roc_auc_score(binary_truth, proba[:, 1]))
            result["average_precision"] = float(skm.average_precision_score(binary_truth, proba[:, 1]))
    elif present == set(labels):
        result["roc_auc"] = float(skm.roc_auc_score(truth, proba, multi_class="ovr", labels=labels))
    return result


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (an undefined metric, not 0)."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


def _ranking_metrics(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ROC AUC and average precision per row of `weights`, ties handled as scikit-learn does."""
    order = np.argsort(score, kind="stable")
    if np.any(order[1:] < order[:-1]):  # bootstrap_intervals sorts the rows once, so this is rare
        positive, score, weights = positive[order], score[order], weights[:, order]
    pos_w = weights * positive
    neg_w = weights - pos_w
    starts = np.flatnonzero(np.r_[True, score[1:] != score[:-1]])  # groups of equal scores
    if len(starts) < len(score):
        pos_w, neg_w = np.add.reduceat(pos_w, starts, axis=1), np.add.reduceat(neg_w, starts, axis=1)
    pos, neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    below = np.cumsum(neg_w, axis=1)
    below -= neg_w  # negatives scored strictly lower
    below += 0.5 * neg_w
    auc = _ratio((pos_w * below).sum(axis=1), pos * neg)
    true_pos = np.cumsum(pos_w[:, ::-1], axis=1)  # thresholds from the highest score down
    flagged = true_pos + np.cumsum(neg_w[:, ::-1], axis=1)
    precision = np.divide(true_pos, flagged, out=np.zeros_like(true_pos), where=flagged > 0)
    average_precision = _ratio((pos_w[:, ::-1] * precision).sum(axis=1), pos)
    return {"roc_auc": auc, "average_precision": average_precision}


def resampled_metrics(
    task_type: TaskType, classes: list[Any] | None, y: pd.Series, output: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """The task's metrics for each resample at once: row b of `weights` counts how often each
    holdout row was drawn. Equal to `metrics_from_predictions` on the drawn rows (NaN where a
    resample leaves a metric undefined); multiclass ROC AUC is not resampled."""
    rows = weights.sum(axis=1)
    if task_type == "regression":
        truth = np.asarray(y, dtype=float)
        error = truth - output
        centred = truth - truth.mean()
        mean = (weights @ centred) / rows
        total = weights @ centred**2 - rows * mean**2
        return {
            "rmse": np.sqrt((weights @ error**2) / rows),
            "mae": (weights @ np.abs(error)) / rows,
            "r2": 1 - _ratio(weights @ error**2, total),
        }
    assert classes is not None
    labels = label_array(classes)
    truth = label_array(y, like=labels)
    predicted = predicted_labels(labels, output)
    is_true = (truth[:, None] == labels[None, :]).astype(float)
    is_predicted = (predicted[:, None] == labels[None, :]).astype(float)
    hits, support, flagged = weights @ (is_true * is_predicted), weights @ is_true, weights @ is_predicted
    seen = (support + flagged) > 0
    f1 = np.where(seen, _ratio(2 * hits, support + flagged), np.nan)
    proba = np.clip(output, np.finfo(output.dtype).eps, 1 - np.finfo(output.dtype).eps)
    proba = proba / proba.sum(axis=1, keepdims=True)
    loss = -np.log((proba * is_true).sum(axis=1))
    result = {
        "accuracy": (weights @ (truth == predicted)) / rows,
        "balanced_accuracy": np.nanmean(_ratio(hits, support), axis=1),
        "f1_macro": np.nanmean(f1, axis=1),
        "log_loss": (weights @ loss) / rows,
    }
    if task_type == "binary":
        result |= {
            "f1": np.nan_to_num(f1[:, 1]),
            "precision": np.nan_to_num(_ratio(hits[:, 1], flagged[:, 1])),
            "recall": _ratio(hits[:, 1], support[:, 1]),
        }
        result |= _ranking_metrics(truth == labels[1], output[:, 1], weights)
    return result


def bootstrap_intervals(
    task_type: TaskType,
    classes: list[Any] | None,
    y: pd.Series,
    output: np.ndarray,
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap 95 % intervals of the holdout metrics: holdout rows drawn with
    replacement `resamples` times (seeded), every resample's metrics computed at once from the
    one prediction pass, in blocks that bound memory; at most BOOTSTRAP_ROWS rows (a seeded sample)."""
    rng = np.random.default_rng(seed)
    if len(y) > BOOTSTRAP_ROWS:
        kept = np.sort(rng.choice(len(y), BOOTSTRAP_ROWS, replace=False))
        y, output = y.iloc[kept], output[kept]
    rows = len(y)
    if rows < 2:
        return {}
    if task_type == "binary":  # rows in score order, once: the ranking metrics then need no sort per block
        order = np.argsort(output[:, 1], kind="stable")
        y, output = y.iloc[order], output[order]
    block = max(1, _BOOTSTRAP_CELLS // rows)
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        drawn = rng.integers(0, rows, size=(count, rows)) + rows * np.arange(count)[:, None]
        weights = np.bincount(drawn.ravel(), minlength=count * rows).reshape(count, rows).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            for name, values in resampled_metrics(task_type, classes, y, output, weights).items():
                collected.setdefault(name, []).append(values)
    intervals = {}
    for name, parts in collected.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        if len(values) >= resamples // 2:  # undefined in most resamples: no interval worth printing
            low, high = np.percentile(values, [2.5, 97.5])
            intervals[name] = (float(low), float(high))
    return intervals


def prediction_frame(
    task_type: TaskType, model: Any, X: pd.DataFrame, output: np.ndarray | None = None
) -> pd.DataFrame:
    """Predictions as scoring writes them: `prediction`, plus `proba_<class>` for classifiers.
    `output`: the model's `predict` output on `X` when the caller has it already."""
    if output is None:
        output = predict(task_type, model, X)
    if task_type == "regression":
        return pd.DataFrame({"prediction": output}, index=X.index)
    classes = list(model.classes_)
    frame = pd.DataFrame(output, columns=[f"proba_{c}" for c in classes], index=X.index)
    frame.insert(0, "prediction", predicted_labels(model.classes_, output))
    return frame


def compute_metrics(task_type: TaskType, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """The task's standard metrics on one frame."""
    classes = None if task_type == "regression" else list(model.classes_)
    return metrics_from_predictions(task_type, classes, y, predict(task_type, model, X))


def feature_importance(model: Any, X: pd.DataFrame, y: pd.Series, task_type: TaskType, seed: int) -> dict[str, float]:
    """Permutation importance on (a sample of) the holdout, per input column, largest first."""
    if len(X) > _IMPORTANCE_ROWS:
        X = X.sample(_IMPORTANCE_ROWS, random_state=seed)
        y = y.loc[X.index]
    scoring = "r2" if task_type == "regression" else "balanced_accuracy"
    result = permutation_importance(model, X, y, scoring=scoring, n_repeats=3, random_state=seed)
    ranked = sorted(zip(X.columns, result.importances_mean, strict=True), key=lambda kv: -kv[1])
    return {str(name): float(value) for name, value in ranked}


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def evaluation_plots(
    task_type: TaskType, classes: list[Any] | None, y: pd.Series, output: np.ndarray
) -> dict[str, bytes]:
    """PNG plots: ROC, precision-recall and confusion matrix for classifiers, residuals otherwise.

    Drawn on matplotlib's Figure (the Agg canvas), as the monitoring report's charts are:
    scikit-learn's Display classes import pyplot (about 1.8 CPU-s of a small `conveyor train` here).
    """
    from matplotlib.figure import Figure

    if task_type == "regression":
        axis = Figure(figsize=(5, 4)).subplots()
        axis.scatter(output, np.asarray(y) - output, s=6, alpha=0.5)
        axis.axhline(0, color="grey", linewidth=1)
        axis.set(xlabel="predicted", ylabel="residual", title="Residuals on the holdout")
        return {"residuals.png": _png(axis.figure)}
    assert classes is not None
    labels = label_array(classes)
    truth = label_array(y, like=labels)
    plots = {"confusion_matrix.png": _png(_confusion_matrix(truth, predicted_labels(labels, output), labels))}
    if task_type == "binary" and y.nunique() == 2:
        positive = truth == labels[1]
        false_positive, true_positive, _ = skm.roc_curve(positive, output[:, 1])
        axis = Figure(figsize=(5, 4)).subplots()
        axis.plot(false_positive, true_positive, label=f"AUC = {skm.auc(false_positive, true_positive):.2f}")
        axis.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve on the holdout")
        axis.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
        axis.legend(loc="lower right")
        plots["roc_curve.png"] = _png(axis.figure)
        precision, recall, _ = skm.precision_recall_curve(positive, output[:, 1])
        average = skm.average_precision_score(positive, output[:, 1])
        axis = Figure(figsize=(5, 4)).subplots()
        axis.step(recall, precision, where="post", label=f"AP = {average:.2f}")
        axis.set(xlabel="Recall", ylabel="Precision", title="Precision and recall on the holdout")
        axis.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal")
        axis.legend(loc="lower left")
        plots["precision_recall.png"] = _png(axis.figure)
    return plots


def _confusion_matrix(truth: np.ndarray, predicted: np.ndarray, labels: np.ndarray) -> Any:
    """The counts of each true label (rows) against each predicted one (columns), annotated."""
    from matplotlib.figure import Figure

    counts = skm.confusion_matrix(truth, predicted, labels=labels)
    axis = Figure(figsize=(5, 4)).subplots()
    axis.imshow(counts, interpolation="nearest", cmap="viridis")
    middle = (counts.max() + counts.min()) / 2
    for (row, column), count in np.ndenumerate(counts):
        # viridis runs from dark to light: dark text on the light cells, white on the dark ones
        axis.text(column, row, f"{count:,}", ha="center", va="center", color="#222" if count > middle else "white")
    names = [str(label) for label in labels]
    axis.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0)
    axis.set_yticks(range(len(names)), names)
    axis.set(xlabel="Predicted label", ylabel="True label", title="Confusion matrix on the holdout")
    return axis.figure


def evaluate(task_type: TaskType, model: Any, X: pd.DataFrame, y: pd.Series, seed: int = 0) -> Evaluation:
    classes = None if task_type == "regression" else list(model.classes_)
    output = predict(task_type, model, X)
    return Evaluation(
        metrics=metrics_from_predictions(task_type, classes, y, output),
        importance=feature_importance(model, X, y, task_type, seed),
        plots=evaluation_plots(task_type, classes, y, output),
        intervals=bootstrap_intervals(task_type, classes, y, output, seed),
    )


@task(name="evaluate_model", cache_policy=NO_CACHE)
def evaluate_model(task_type: TaskType, model: Any, X: pd.DataFrame, y: pd.Series, seed: int) -> Evaluation:
    """Metrics with bootstrap intervals, plots and permutation importance on the holdout."""
    return evaluate(task_type, model, X, y, seed)
