"""Fairness on the holdout: metrics per group of each sensitive attribute, with fairlearn's
`MetricFrame`, the disparities between groups, and the optional fairness gate.

Binary classifiers: selection rate, true and false positive rates, accuracy per group; disparities
are demographic parity, TPR, FPR and equalized odds differences (the largest gap between two
groups; equalized odds takes the worse of TPR and FPR). Multiclass: accuracy per group. Regressors:
mean absolute error per group, and `error_difference` (the largest gap in MAE).

Missing values of an attribute form a group of their own. A group with fewer than
`MIN_GROUP_ROWS` holdout rows is shown but left out of the disparities: a gap measured on a
handful of rows is noise. When fewer than two groups are large enough, the disparity cannot be
measured and a fairness gate on it rejects the candidate, saying why (never a silent pass).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.decision import Decision
from conveyor.errors import DataError
from conveyor.orchestration import IO_TASK
from conveyor.spec import FairnessGate, PipelineSpec, TaskType
from tasks.evaluation import label_array, predict, predicted_labels

MIN_GROUP_ROWS = 20
MISSING = "(missing)"

# Per-group metric behind each disparity (the values a refusal quotes).
_BEHIND = {
    "demographic_parity_difference": ("selection_rate",),
    "true_positive_rate_difference": ("true_positive_rate",),
    "false_positive_rate_difference": ("false_positive_rate",),
    "equalized_odds_difference": ("true_positive_rate", "false_positive_rate"),
    "accuracy_difference": ("accuracy",),
    "error_difference": ("mae",),
}


def _rate(hits: np.ndarray) -> float:
    """The share of True in `hits`; NaN for no rows (a rate that is undefined, not 0)."""
    return float(np.mean(hits)) if len(hits) else float("nan")


def selection_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _rate(np.asarray(y_pred, dtype=bool))


def true_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _rate(np.asarray(y_pred, dtype=bool)[np.asarray(y_true, dtype=bool)])


def false_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _rate(np.asarray(y_pred, dtype=bool)[~np.asarray(y_true, dtype=bool)])


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return _rate(np.asarray(y_true) == np.asarray(y_pred))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_pred, dtype=float))))


@dataclass(frozen=True)
class AttributeFairness:
    attribute: str
    metrics: tuple[str, ...]  # the per-group metrics, in table order
    groups: list[dict[str, Any]]  # {"group", "rows", <metric>: value}, largest group first
    disparities: dict[str, float | None]  # None: fewer than two groups with enough rows
    small: list[str] = field(default_factory=list)  # groups left out of the disparities


@dataclass(frozen=True)
class FairnessReport:
    attributes: list[AttributeFairness]
    min_rows: int = MIN_GROUP_ROWS
    positive: str | None = None  # the class a binary model's selection rate counts

    def mlflow_metrics(self) -> dict[str, float]:
        """`fairness.<attribute>.<disparity>` and `fairness.<attribute>.<group>.<metric>`."""
        result: dict[str, float] = {}
        for item in self.attributes:
            prefix = f"fairness.{metric_key(item.attribute)}"
            result |= {f"{prefix}.{k}": v for k, v in item.disparities.items() if v is not None}
            for group in item.groups:
                name = f"{prefix}.{metric_key(group['group'])}"
                result[f"{name}.rows"] = float(group["rows"])
                result |= {f"{name}.{m}": group[m] for m in item.metrics if np.isfinite(group[m])}
        return result

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_key(text: str) -> str:
    """A name MLflow accepts in a metric key (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", str(text))[:60] or "_"


def group_labels(values: pd.Series) -> pd.Series:
    """Each row's group as text; missing values are a group of their own."""
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def holdout_groups(spec: PipelineSpec, frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    """The holdout rows' sensitive attributes (taken from the data, so excluded features still count)."""
    attributes = list(spec.governance.sensitive_attributes)
    absent = [a for a in attributes if a not in frame.columns]
    if absent:
        raise DataError(
            f"governance.sensitive_attributes: column {absent[0]!r} is not in the data "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    return frame.loc[index, attributes]


def _disparities(by_group: pd.DataFrame, task_type: TaskType) -> dict[str, float | None]:
    """The largest gap between groups of each metric (fairlearn's `difference(between_groups)`)."""

    def gap(metric: str) -> float | None:
        values = by_group[metric].dropna()
        return float(values.max() - values.min()) if len(values) >= 2 else None

    if task_type == "regression":
        return {"error_difference": gap("mae")}
    if task_type == "multiclass":
        return {"accuracy_difference": gap("accuracy")}
    tpr, fpr = gap("true_positive_rate"), gap("false_positive_rate")
    return {
        "demographic_parity_difference": gap("selection_rate"),
        "true_positive_rate_difference": tpr,
        "false_positive_rate_difference": fpr,
        "equalized_odds_difference": None if tpr is None or fpr is None else max(tpr, fpr),
    }


def fairness_by_group(
    task_type: TaskType,
    classes: list[Any] | None,
    y: pd.Series,
    output: np.ndarray,
    sensitive: pd.DataFrame,
    min_rows: int = MIN_GROUP_ROWS,
) -> FairnessReport:
    """Per-group metrics and disparities for each sensitive attribute, from one prediction pass."""
    from fairlearn.metrics import MetricFrame

    positive = None
    if task_type == "regression":
        truth, predicted = np.asarray(y, dtype=float), np.asarray(output, dtype=float)
        metrics: dict[str, Any] = {"mae": mae}
    else:
        assert classes is not None
        labels = label_array(classes)
        truth, predicted = label_array(y, like=labels), predicted_labels(labels, output)
        metrics = {"accuracy": accuracy}
        if task_type == "binary":
            positive = labels[1]
            truth, predicted = truth == positive, predicted == positive
            metrics = {
                "selection_rate": selection_rate,
                "true_positive_rate": true_positive_rate,
                "false_positive_rate": false_positive_rate,
                "accuracy": accuracy,
            }
    attributes = []
    for attribute in sensitive.columns:
        groups = group_labels(sensitive[attribute])
        frame = MetricFrame(
            metrics={"rows": lambda t, p: len(t), **metrics},
            y_true=truth,
            y_pred=predicted,
            sensitive_features=groups.to_numpy(),
        ).by_group
        frame = frame.sort_values("rows", ascending=False, kind="stable")
        large = frame[frame["rows"] >= min_rows]
        attributes.append(
            AttributeFairness(
                attribute=str(attribute),
                metrics=tuple(metrics),
                groups=[
                    {"group": str(name), "rows": int(row["rows"]), **{m: float(row[m]) for m in metrics}}
                    for name, row in frame.iterrows()
                ],
                disparities=_disparities(large, task_type),
                small=[str(name) for name in frame.index if name not in large.index],
            )
        )
    return FairnessReport(attributes, min_rows, None if positive is None else str(positive))


def fairness_failures(gate: FairnessGate | None, report: FairnessReport) -> list[str]:
    """Why the candidate misses the fairness gate, worst attribute first (empty when it passes)."""
    if gate is None:
        return []
    over: list[tuple[float, str]] = []
    unmeasured: list[str] = []
    for item in report.attributes:
        value = item.disparities.get(gate.metric)
        behind = _BEHIND.get(gate.metric, ())
        if value is None or not np.isfinite(value):
            sizes = ", ".join(f"{g['group']}: {g['rows']}" for g in item.groups)
            unmeasured.append(
                f"{gate.metric} on {item.attribute!r} could not be measured: fewer than two groups with at "
                f"least {report.min_rows} holdout rows ({sizes})"
            )
        elif value > gate.max:
            shown = "; ".join(
                f"{m} " + ", ".join(f"{g['group']} {g[m]:.3g}" for g in item.groups if g["group"] not in item.small)
                for m in behind
            )
            left_out = f"; groups under {report.min_rows} rows left out: {', '.join(item.small)}" if item.small else ""
            over.append(
                (
                    value,
                    f"{gate.metric} {value:.3g} on {item.attribute!r} is over the limit {gate.max:g} "
                    f"({shown}{left_out})",
                )
            )
    return [f"fairness: {text}" for _, text in sorted(over, key=lambda pair: -pair[0])] + [
        f"fairness: {text}" for text in unmeasured
    ]


def fairness_gate(plan: Decision, gate: FairnessGate | None, report: FairnessReport) -> Decision:
    """The decision with the fairness gate applied: over the limit rejects, like a missed floor."""
    failures = fairness_failures(gate, report)
    if not failures:
        return plan
    reasons = [plan.reason] if plan.outcome == "rejected" else []
    return Decision("rejected", "; ".join([*reasons, *failures]))


@task(name="evaluate_fairness", cache_policy=NO_CACHE)
def evaluate_fairness(
    task_type: TaskType, model: Any, X: pd.DataFrame, y: pd.Series, sensitive: pd.DataFrame
) -> FairnessReport:
    """Metrics per group of each sensitive attribute on the holdout, and the disparities."""
    if not len(sensitive.columns):
        return FairnessReport([])
    classes = None if task_type == "regression" else list(model.classes_)
    return fairness_by_group(task_type, classes, y, predict(task_type, model, X), sensitive)


@task(name="log_fairness", **IO_TASK)
def log_fairness(run_id: str, report: FairnessReport) -> None:
    """Disparities and per-group metrics as MLflow metrics, the whole report as fairness.json."""
    if report.attributes:
        registry.log_metrics(run_id, report.mlflow_metrics())
        registry.log_dict(run_id, report.as_dict(), "fairness.json")
