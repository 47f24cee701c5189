"""Multivariate drift: how well a classifier tells recent rows from the profile's reference rows.

The domain classifier of "Introducing MLOps": a gradient-boosted model cross-validated on
balanced row samples. An AUC near 0.5 means the batches cannot be told apart; the features it
relies on (by the AUC lost when each is shuffled) say where the difference lies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from conveyor.report import DomainDrift
from tasks.drift.profile import OTHER
from tasks.drift.stats import category_key, is_null, numeric_values


def domain_drift(
    profile: Mapping[str, Any],
    current: pd.DataFrame,
    sample_index: np.ndarray,
    threshold: float,
    seed: int,
) -> DomainDrift:
    """The "Introducing MLOps" domain classifier, cross-validated on balanced row samples."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    sample = profile["sample"]
    numeric = [c for c in profile["numeric"] if c in current.columns and c in sample["columns"]]
    categorical = [c for c in profile["categorical"] if c in current.columns and c in sample["columns"]]
    rows = min(int(sample["rows"]), sample_index.size)
    if rows < 50 or not (numeric or categorical):
        return DomainDrift(auc=None, threshold=threshold, drifted=False, note="too few rows or columns to train")

    rng = np.random.default_rng(seed + 1)
    ref_rows = np.sort(rng.choice(int(sample["rows"]), size=rows, replace=False))
    cur_rows = sample_index[:rows]
    columns = [*numeric, *categorical]
    x = np.empty((2 * rows, len(columns)), dtype="float64")
    for j, name in enumerate(numeric):
        x[:rows, j] = _finite_or_none(sample["columns"][name], ref_rows)
        x[rows:, j] = numeric_values(current[name].iloc[cur_rows])
    for j, name in enumerate(categorical, start=len(numeric)):
        categories = [k for k in profile["categorical"][name]["counts"] if k != OTHER]
        ref_values = [sample["columns"][name][i] for i in ref_rows]
        cur_values = [None if is_null(v) else category_key(v) for v in current[name].iloc[cur_rows].to_numpy()]
        x[:rows, j] = _category_codes(ref_values, categories)
        x[rows:, j] = _category_codes(cur_values, categories)
    y = np.r_[np.zeros(rows, dtype=int), np.ones(rows, dtype=int)]
    # Infinities would break the binner; treat them as missing for this purpose.
    x[~np.isfinite(x)] = np.nan

    is_categorical = np.array([name in categorical for name in columns])
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    aucs: list[float] = []
    importance = np.zeros(len(columns))
    for train, test in folds.split(x, y):
        model = HistGradientBoostingClassifier(
            max_iter=50,
            max_leaf_nodes=15,
            learning_rate=0.1,
            early_stopping=False,
            categorical_features=is_categorical if is_categorical.any() else None,
            random_state=seed,
        ).fit(x[train], y[train])
        aucs.append(float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])))
        importance += _permutation_drop(model, x[test], y[test], aucs[-1], rng) / 3
    auc = float(np.mean(aucs))
    ranked = sorted(zip(columns, importance, strict=True), key=lambda kv: -kv[1])
    return DomainDrift(
        auc=auc,
        auc_folds=aucs,
        rows_reference=rows,
        rows_current=rows,
        importances={name: round(float(v), 6) for name, v in ranked},
        threshold=threshold,
        drifted=auc > threshold,
    )


def _permutation_drop(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    base_auc: float,
    rng: np.random.Generator,
    repeats: int = 1,
) -> np.ndarray:
    """Mean AUC lost when each column is shuffled, all shuffles scored in one predict call.

    sklearn's permutation_importance does the same one column and one scorer call at a time,
    which took most of the monitoring time here.
    """
    rows, width = x.shape
    shuffled = np.repeat(x[None, :, :], width * repeats, axis=0)
    for k in range(width * repeats):
        column = k % width
        shuffled[k, :, column] = x[rng.permutation(rows), column]
    scores = model.predict_proba(shuffled.reshape(-1, width))[:, 1].reshape(width * repeats, rows)
    drops = np.array([base_auc - roc_auc_score(y, s) for s in scores])
    return drops.reshape(repeats, width).mean(axis=0)


def _finite_or_none(values: list[float | None], rows: np.ndarray) -> np.ndarray:
    return np.array([np.nan if values[i] is None else values[i] for i in rows], dtype="float64")


def _category_codes(values: list[str | None], categories: list[str]) -> np.ndarray:
    """Codes 0..k-1 for the profile's categories, k for any other value, NaN for nulls."""
    lookup = {c: float(i) for i, c in enumerate(categories)}
    other = float(len(categories))
    return np.array([np.nan if v is None else lookup.get(v, other) for v in values], dtype="float64")
