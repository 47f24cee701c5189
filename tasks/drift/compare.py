"""The comparison: a batch (and its predictions) against a reference profile, column by column.

A feature drifts when its PSI exceeds the threshold; the batch drifts when any feature or
prediction column drifts, or the domain classifier tells the batch from the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from conveyor.errors import DataError
from conveyor.report import ColumnKind, DriftReport, FeatureDrift
from tasks.drift.domain import domain_drift
from tasks.drift.profile import OTHER
from tasks.drift.stats import (
    bin_counts,
    category_counts,
    chi_square_test,
    fraction,
    jensen_shannon,
    json_float,
    ks_test,
    numeric_values,
    psi,
    wasserstein,
)

NULL_LABEL = "(null)"


def compare_to_profile(
    profile: Mapping[str, Any],
    current: pd.DataFrame,
    predictions: pd.Series | pd.DataFrame | None = None,
    psi_threshold: float = 0.2,
    domain_auc_threshold: float = 0.7,
    seed: int = 0,
    sample_rows: int = 5_000,
    domain_classifier: bool = True,
) -> DriftReport:
    """Compare a batch (and its predictions) with a reference profile.

    A feature drifts when its PSI exceeds `psi_threshold`; the batch drifts when any feature or
    prediction column drifts, or the domain classifier's cross-validated ROC AUC exceeds
    `domain_auc_threshold`.
    """
    if len(current) == 0:
        raise DataError("monitoring: the current batch has no rows to compare with the profile")
    rng = np.random.default_rng(seed)
    sample_index = rng.choice(len(current), size=min(len(current), sample_rows), replace=False)
    features = _compare_columns(profile, current, sample_index, psi_threshold)

    prediction_drifts: list[FeatureDrift] = []
    if predictions is not None and profile.get("prediction"):
        pred_frame = predictions.to_frame() if isinstance(predictions, pd.Series) else predictions
        if len(pred_frame):
            pred_index = rng.choice(len(pred_frame), size=min(len(pred_frame), sample_rows), replace=False)
            prediction_drifts = _compare_columns(profile["prediction"], pred_frame, pred_index, psi_threshold)

    domain = domain_drift(profile, current, sample_index, domain_auc_threshold, seed) if domain_classifier else None
    drifted = sum(f.drifted for f in features)
    prediction_drift = any(f.drifted for f in prediction_drifts)
    return DriftReport(
        rows_reference=int(profile["rows"]),
        rows_current=len(current),
        psi_threshold=psi_threshold,
        features=features,
        predictions=prediction_drifts,
        domain=domain,
        drift_share=drifted / len(features) if features else 0.0,
        prediction_drift=prediction_drift,
        drift_detected=bool(drifted or prediction_drift or (domain is not None and domain.drifted)),
    )


def _compare_columns(
    section: Mapping[str, Any],
    current: pd.DataFrame,
    sample_index: np.ndarray,
    psi_threshold: float,
) -> list[FeatureDrift]:
    sample = section["sample"]["columns"]
    results = []
    for name, ref in section["numeric"].items():
        if name not in current.columns:
            results.append(_missing(name, "numeric", ref))
        else:
            results.append(_numeric_drift(name, ref, sample.get(name, []), current[name], sample_index, psi_threshold))
    for name, ref in section["categorical"].items():
        if name not in current.columns:
            results.append(_missing(name, "categorical", ref))
        else:
            results.append(_categorical_drift(name, ref, current[name], psi_threshold))
    return results


def _missing(name: str, kind: ColumnKind, ref: Mapping[str, Any]) -> FeatureDrift:
    return FeatureDrift(
        name=name,
        kind=kind,
        psi=None,
        test="ks" if kind == "numeric" else "chi_square",
        statistic=None,
        p_value=None,
        distance=None,
        distance_name="wasserstein_normed" if kind == "numeric" else "jensen_shannon",
        null_fraction_reference=ref["null_fraction"],
        null_fraction_current=1.0,
        drifted=True,
        note="column missing from the current batch",
    )


def sampling_psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """The PSI two samples of these sizes show with no drift at all: about (bins - 1) x (1/n + 1/N)
    (PSI is a symmetric chi-square over n). Flagging above threshold + this keeps a batch of a few
    hundred rows from drifting on noise, and changes nothing at large row counts."""
    bins = int(np.count_nonzero((expected + actual) > 0))
    n, big_n = float(actual.sum()), float(expected.sum())
    if bins < 2 or n == 0 or big_n == 0:
        return 0.0
    return (bins - 1) * (1.0 / n + 1.0 / big_n)


def _numeric_drift(
    name: str,
    ref: Mapping[str, Any],
    ref_sample: list[float | None],
    column: pd.Series,
    sample_index: np.ndarray,
    psi_threshold: float,
) -> FeatureDrift:
    values = numeric_values(column)
    edges = ref["edges"]
    counts, nulls = bin_counts(values, edges)
    expected = np.append(np.asarray(ref["counts"], dtype="float64"), ref["nulls"])
    actual = np.append(counts.astype("float64"), nulls)
    score = psi(expected, actual)
    current_sample = values[sample_index]
    statistic, p_value = ks_test(ref_sample, current_sample)
    labels = _bin_labels(edges)
    return FeatureDrift(
        name=name,
        kind="numeric",
        psi=score,
        test="ks",
        statistic=json_float(statistic),
        p_value=json_float(p_value),
        distance=json_float(wasserstein(ref_sample, current_sample, ref.get("std"))),
        distance_name="wasserstein_normed",
        null_fraction_reference=ref["null_fraction"],
        null_fraction_current=fraction(nulls, values.size),
        drifted=score > psi_threshold + sampling_psi(expected, actual),
        **_shares(labels, expected, actual),
    )


def _categorical_drift(name: str, ref: Mapping[str, Any], column: pd.Series, psi_threshold: float) -> FeatureDrift:
    ref_counts: dict[str, int] = ref["counts"]
    counts = category_counts(column)
    keys = [k for k in ref_counts if k != OTHER]
    matched = [counts.get(k, 0) for k in keys]
    other = sum(counts.values()) - sum(matched)
    nulls = int(column.isna().sum())
    expected = np.array([*(ref_counts[k] for k in keys), ref_counts.get(OTHER, 0), ref["nulls"]], dtype="float64")
    actual = np.array([*matched, other, nulls], dtype="float64")
    score = psi(expected, actual)
    statistic, p_value, _ = chi_square_test(expected[:-1], actual[:-1])
    known = set(ref_counts)
    # Only a reference that kept all its categories can say a value is new rather than rare.
    new = (
        [k for k, _ in sorted(counts.items(), key=lambda kv: -kv[1]) if k not in known][:10]
        if not ref_counts.get(OTHER)
        else []
    )
    return FeatureDrift(
        name=name,
        kind="categorical",
        psi=score,
        test="chi_square",
        statistic=json_float(statistic),
        p_value=json_float(p_value),
        distance=json_float(jensen_shannon(expected[:-1], actual[:-1])),
        distance_name="jensen_shannon",
        null_fraction_reference=ref["null_fraction"],
        null_fraction_current=fraction(nulls, len(column)),
        new_categories=new,
        drifted=score > psi_threshold + sampling_psi(expected, actual),
        **_shares([*keys, "(other)"], expected, actual),
    )


def _bin_labels(edges: Sequence[float]) -> list[str]:
    if not edges:
        return ["all"]
    text = [f"{e:.3g}" for e in edges]
    middle = [f"({a}, {b}]" for a, b in zip(text[:-1], text[1:], strict=True)]
    return [f"≤ {text[0]}", *middle, f"> {text[-1]}"]


def _shares(labels: list[str], expected: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    """Bin labels and proportions for the report's charts; the null bucket only when used."""
    labels = [*labels, NULL_LABEL]
    keep = np.ones(len(labels), dtype=bool)
    keep[-1] = expected[-1] > 0 or actual[-1] > 0
    ref = expected / expected.sum() if expected.sum() else expected
    cur = actual / actual.sum() if actual.sum() else actual
    return {
        "bins": [label for label, k in zip(labels, keep, strict=True) if k],
        "reference": [round(float(v), 6) for v in ref[keep]],
        "current": [round(float(v), 6) for v in cur[keep]],
    }
