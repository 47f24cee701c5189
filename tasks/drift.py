"""Drift monitoring: a reference profile stored with each model, and comparisons against it.

The profile is built once at training time and is strict JSON (no NaN or infinity), so it can be
logged with the model and read back anywhere. Monitoring reads only the profile and the current
batch: binned counts for PSI, a small row sample for the KS test and the domain classifier.

Numeric bins are right-closed: with inner cut points ``edges = [e0, ..., ek]`` the bins are
``(-inf, e0], (e0, e1], ..., (ek, +inf)``; the outer edges -inf and +inf are implicit so that the
profile stays strict JSON. Nulls are counted in a separate bucket that takes part in PSI, so a
surge of missing values reads as drift.

PSI is the drift flag. At production row counts the p-values of KS and chi-square are tiny for
any difference at all, so they are reported, never flagged on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import stats
from scipy.spatial import distance

from conveyor.errors import DataError

PROFILE_VERSION = 1
OTHER = "__other__"
NULL_LABEL = "(null)"
TOP_CATEGORIES = 50
SAMPLE_ROWS = 2_000

ColumnKind = Literal["numeric", "categorical"]


# --------------------------------------------------------------------------- statistics


def psi(
    expected_counts: Sequence[float] | np.ndarray,
    actual_counts: Sequence[float] | np.ndarray,
    eps: float = 1e-4,
) -> float:
    """Population stability index: sum((a - e) * ln(a / e)) over bins of proportions.

    Proportions below `eps` are raised to `eps`, so an empty bin on either side counts as
    `eps` instead of making the index infinite.
    """
    expected = np.asarray(expected_counts, dtype="float64")
    actual = np.asarray(actual_counts, dtype="float64")
    if expected.shape != actual.shape:
        raise ValueError(f"psi: {expected.shape[0]} expected bins but {actual.shape[0]} actual")
    if expected.sum() <= 0 or actual.sum() <= 0:
        raise ValueError("psi: both distributions need at least one count")
    e = np.maximum(expected / expected.sum(), eps)
    a = np.maximum(actual / actual.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(
    reference_sample: Sequence[float | None] | np.ndarray,
    current: Sequence[float | None] | np.ndarray,
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test, nulls dropped: (statistic D, two-sided p-value)."""
    ref = _finite_or_inf(reference_sample)
    cur = _finite_or_inf(current)
    if ref.size == 0 or cur.size == 0:
        return math.nan, math.nan
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def chi_square_test(
    reference_counts: Sequence[float] | np.ndarray, current_counts: Sequence[float] | np.ndarray
) -> tuple[float, float, int]:
    """Chi-square test of homogeneity of two count vectors: (statistic, p-value, dof).

    A 2 x k contingency table, not goodness of fit against the reference proportions: the
    reference is a sample too, and a category absent from one side stays finite. Categories
    absent from both sides are dropped.
    """
    table = np.vstack(
        [np.asarray(reference_counts, dtype="float64"), np.asarray(current_counts, dtype="float64")]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), int(result.dof)


def jensen_shannon(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0 = same, 1 = disjoint): sqrt of the JS divergence."""
    p_arr = np.asarray(p, dtype="float64")
    q_arr = np.asarray(q, dtype="float64")
    if p_arr.sum() <= 0 or q_arr.sum() <= 0:
        return math.nan
    return float(distance.jensenshannon(p_arr / p_arr.sum(), q_arr / q_arr.sum(), base=2))


def wasserstein(
    reference_sample: Sequence[float | None] | np.ndarray,
    current: Sequence[float | None] | np.ndarray,
    scale: float | None = None,
) -> float:
    """Earth mover's distance between two samples, divided by `scale` (reference std) if given."""
    ref = _finite(reference_sample)
    cur = _finite(current)
    if ref.size == 0 or cur.size == 0:
        return math.nan
    value = float(stats.wasserstein_distance(ref, cur))
    if scale is not None and scale > 0 and math.isfinite(scale):
        value /= scale
    return value


# --------------------------------------------------------------------------- profile


def build_profile(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    predictions: pd.Series | pd.DataFrame | None,
    metrics: Mapping[str, float],
    bins: int = 10,
    sample_rows: int = SAMPLE_ROWS,
    seed: int = 0,
) -> dict[str, Any]:
    """The reference profile of a training frame (and of the model's predictions), as strict JSON.

    Per numeric column: quantile cut points and bin counts, null count, mean, std, min, max.
    Per categorical column: the counts of the `TOP_CATEGORIES` most frequent values, the rest
    summed under `__other__`, and the null count. A sample of whole rows (the same rows for every
    column) feeds the KS test and the domain classifier.
    """
    missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if missing:
        raise DataError(f"profile: columns {missing} are not in the frame")
    if bins < 2:
        raise ValueError("profile: bins must be at least 2")
    rows = len(frame)
    rng = np.random.default_rng(seed)
    sample_index = np.sort(rng.choice(rows, size=min(rows, sample_rows), replace=False))
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "rows": rows,
        "bins": bins,
        "numeric": {},
        "categorical": {},
        "sample": {"rows": int(sample_index.size), "columns": {}},
        "prediction": None,
        "metrics": {str(k): _json_float(v) for k, v in metrics.items()},
    }
    _profile_columns(profile, frame, list(numeric), list(categorical), bins, sample_index)
    if predictions is not None:
        pred_frame = predictions.to_frame() if isinstance(predictions, pd.Series) else predictions
        pred_numeric, pred_categorical = _prediction_kinds(pred_frame)
        pred_index = np.sort(
            rng.choice(len(pred_frame), size=min(len(pred_frame), sample_rows), replace=False)
        )
        section: dict[str, Any] = {
            "rows": len(pred_frame),
            "numeric": {},
            "categorical": {},
            "sample": {"rows": int(pred_index.size), "columns": {}},
        }
        _profile_columns(section, pred_frame, pred_numeric, pred_categorical, bins, pred_index)
        profile["prediction"] = section
    return profile


def save_profile(profile: Mapping[str, Any], path: str | Path) -> Path:
    """Write the profile as strict JSON (refuses NaN and infinity)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(profile, allow_nan=False, separators=(",", ":")), encoding="utf-8")
    return target


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a profile written by `save_profile`, checking its version."""
    source = Path(path)
    try:
        profile = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{source}: cannot read the reference profile ({exc})") from None
    if not isinstance(profile, dict) or profile.get("version") != PROFILE_VERSION:
        raise DataError(f"{source}: not a version {PROFILE_VERSION} reference profile")
    return profile


def _profile_columns(
    section: dict[str, Any],
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    bins: int,
    sample_index: np.ndarray,
) -> None:
    sample = section["sample"]["columns"]
    for name in numeric:
        values = numeric_values(frame[name])
        section["numeric"][name] = _numeric_profile(values, bins)
        sample[name] = [_json_float(v) for v in values[sample_index]]
    for name in categorical:
        section["categorical"][name] = _categorical_profile(frame[name])
        sample[name] = [
            None if _is_null(v) else category_key(v)
            for v in frame[name].iloc[sample_index].to_numpy()
        ]


def _numeric_profile(values: np.ndarray, bins: int) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    if finite.size:
        # inverted_cdf cuts at observed values: discrete columns get clean bins, no 0.3 edges.
        cuts = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
        edges = np.unique(cuts)
    else:
        edges = np.array([], dtype="float64")
    counts, nulls = bin_counts(values, edges)
    present = values[~np.isnan(values)]
    return {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "nulls": int(nulls),
        "null_fraction": _fraction(nulls, values.size),
        "mean": _json_float(finite.mean()) if finite.size else None,
        "std": _json_float(finite.std()) if finite.size else None,
        "min": _json_float(present.min()) if present.size else None,
        "max": _json_float(present.max()) if present.size else None,
    }


def _categorical_profile(series: pd.Series) -> dict[str, Any]:
    counts = category_counts(series)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = dict(ordered[:TOP_CATEGORIES])
    rest = sum(count for _, count in ordered[TOP_CATEGORIES:])
    if rest or OTHER in top:
        top[OTHER] = top.get(OTHER, 0) + rest
    nulls = int(series.isna().sum())
    return {
        "counts": top,
        "categories": len(counts),
        "nulls": nulls,
        "null_fraction": _fraction(nulls, len(series)),
    }


def _prediction_kinds(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Float columns (probabilities, regression outputs) are binned; labels are categories."""
    numeric = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c].dtype)]
    categorical = [c for c in frame.columns if c not in numeric]
    return [str(c) for c in numeric], [str(c) for c in categorical]


# --------------------------------------------------------------------------- helpers on columns


def numeric_values(series: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for nulls; text that is not a number becomes null."""
    try:
        return series.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def bin_counts(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    """Counts per right-closed bin of the inner cut points `edges`, and the null count."""
    cuts = np.asarray(edges, dtype="float64")
    nulls = int(np.isnan(values).sum())
    # One counting pass per edge (NaN compares false) beats a binary search per value by ~4x
    # at ten bins, and needs no index array.
    at_or_below = [np.count_nonzero(values <= cut) for cut in cuts]
    counts = np.diff(np.array([0, *at_or_below, values.size - nulls], dtype="int64"))
    return counts, nulls


def category_key(value: Any) -> str:
    """The text a category is stored under: 1, 1.0 and np.int64(1) are all '1'."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def category_counts(series: pd.Series) -> dict[str, int]:
    """Non-null value counts keyed by `category_key`, counted once per distinct value."""
    counts = series.value_counts(dropna=True, sort=False)
    merged: dict[str, int] = {}
    for value, count in zip(counts.index, counts.to_numpy(), strict=True):
        if count:
            key = category_key(value)
            merged[key] = merged.get(key, 0) + int(count)
    return merged


def _is_null(value: Any) -> bool:
    return (
        value is None
        or value is pd.NA
        or (isinstance(value, float | np.floating) and np.isnan(value))
    )


def _as_floats(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values.astype("float64", copy=False)
    return np.array([np.nan if v is None else v for v in values], dtype="float64")


def _finite(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = _as_floats(values)
    return array[np.isfinite(array)]


def _finite_or_inf(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = _as_floats(values)
    return array[~np.isnan(array)]


def _json_float(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _fraction(part: int, whole: int) -> float:
    return float(part / whole) if whole else 0.0


# --------------------------------------------------------------------------- the report


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class FeatureDrift(_Model):
    """Drift of one column: PSI (the flag), a test (reported), a distance, and the binned shares."""

    name: str
    kind: ColumnKind
    psi: float | None
    test: Literal["ks", "chi_square"]
    statistic: float | None
    p_value: float | None
    distance: float | None
    distance_name: Literal["wasserstein_normed", "jensen_shannon"]
    null_fraction_reference: float
    null_fraction_current: float
    new_categories: list[str] = []
    drifted: bool
    note: str = ""
    bins: list[str] = []
    reference: list[float] = []
    current: list[float] = []


class DomainDrift(_Model):
    """Multivariate drift: how well a classifier tells current rows from reference rows."""

    auc: float | None
    auc_folds: list[float] = []
    rows_reference: int = 0
    rows_current: int = 0
    importances: dict[str, float] = {}
    threshold: float
    drifted: bool
    note: str = ""


class DriftReport(_Model):
    """Everything monitoring found in one batch; `model_dump_json()` is its JSON form."""

    rows_reference: int
    rows_current: int
    psi_threshold: float
    features: list[FeatureDrift]
    predictions: list[FeatureDrift] = []
    domain: DomainDrift | None = None
    drift_share: float
    prediction_drift: bool
    drift_detected: bool

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted input features, highest PSI first."""
        drifted = [f for f in self.features if f.drifted]
        return [f.name for f in sorted(drifted, key=lambda f: -(f.psi or math.inf))]


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
            pred_index = rng.choice(
                len(pred_frame), size=min(len(pred_frame), sample_rows), replace=False
            )
            prediction_drifts = _compare_columns(
                profile["prediction"], pred_frame, pred_index, psi_threshold
            )

    domain = (
        _domain_drift(profile, current, sample_index, domain_auc_threshold, seed)
        if domain_classifier
        else None
    )
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
            results.append(
                _numeric_drift(
                    name, ref, sample.get(name, []), current[name], sample_index, psi_threshold
                )
            )
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
        statistic=_json_float(statistic),
        p_value=_json_float(p_value),
        distance=_json_float(wasserstein(ref_sample, current_sample, ref.get("std"))),
        distance_name="wasserstein_normed",
        null_fraction_reference=ref["null_fraction"],
        null_fraction_current=_fraction(nulls, values.size),
        drifted=score > psi_threshold,
        **_shares(labels, expected, actual),
    )


def _categorical_drift(
    name: str, ref: Mapping[str, Any], column: pd.Series, psi_threshold: float
) -> FeatureDrift:
    ref_counts: dict[str, int] = ref["counts"]
    counts = category_counts(column)
    keys = [k for k in ref_counts if k != OTHER]
    matched = [counts.get(k, 0) for k in keys]
    other = sum(counts.values()) - sum(matched)
    nulls = int(column.isna().sum())
    expected = np.array(
        [*(ref_counts[k] for k in keys), ref_counts.get(OTHER, 0), ref["nulls"]], dtype="float64"
    )
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
        statistic=_json_float(statistic),
        p_value=_json_float(p_value),
        distance=_json_float(jensen_shannon(expected[:-1], actual[:-1])),
        distance_name="jensen_shannon",
        null_fraction_reference=ref["null_fraction"],
        null_fraction_current=_fraction(nulls, len(column)),
        new_categories=new,
        drifted=score > psi_threshold,
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


def _domain_drift(
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
    categorical = [
        c for c in profile["categorical"] if c in current.columns and c in sample["columns"]
    ]
    rows = min(int(sample["rows"]), sample_index.size)
    if rows < 50 or not (numeric or categorical):
        return DomainDrift(
            auc=None, threshold=threshold, drifted=False, note="too few rows or columns to train"
        )

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
        cur_values = [
            None if _is_null(v) else category_key(v)
            for v in current[name].iloc[cur_rows].to_numpy()
        ]
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
        aucs.append(_auc(y[test], model.predict_proba(x[test])[:, 1]))
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


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties share their average rank)."""
    ranks = stats.rankdata(score)
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = y.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
    drops = np.array([base_auc - _auc(y, s) for s in scores])
    return drops.reshape(repeats, width).mean(axis=0)


def _finite_or_none(values: list[float | None], rows: np.ndarray) -> np.ndarray:
    return np.array([np.nan if values[i] is None else values[i] for i in rows], dtype="float64")


def _category_codes(values: list[str | None], categories: list[str]) -> np.ndarray:
    """Codes 0..k-1 for the profile's categories, k for any other value, NaN for nulls."""
    lookup = {c: float(i) for i, c in enumerate(categories)}
    other = float(len(categories))
    return np.array(
        [np.nan if v is None else lookup.get(v, other) for v in values], dtype="float64"
    )


# --------------------------------------------------------------------------- performance


def performance_over_time(
    joined: pd.DataFrame,
    task: str,
    window: str = "1D",
    time_column: str = "scored_at",
    label_column: str = "label",
    prediction_column: str = "prediction",
) -> pd.DataFrame:
    """Real metrics per time window over the rows whose ground truth has arrived.

    One row per window that scored anything: `window` (its start), `rows` scored, `labelled`
    rows, then accuracy, f1_macro and (with `proba_<class>` columns) roc_auc for classifiers, or
    rmse, mae and r2 for regressors. Windows without labels have NaN metrics.
    """
    for column in (time_column, label_column, prediction_column):
        if column not in joined.columns:
            raise DataError(f"performance: column {column!r} is not in the joined prediction log")
    if task not in {"binary", "multiclass", "regression"}:
        raise ValueError(f"performance: unknown task {task!r}")
    frame = joined.assign(**{time_column: pd.to_datetime(joined[time_column])})
    proba = [c for c in frame.columns if str(c).startswith("proba_")]
    records = []
    for start, group in frame.groupby(pd.Grouper(key=time_column, freq=window)):
        if group.empty:
            continue
        labelled = group[group[label_column].notna()]
        record: dict[str, Any] = {"window": start, "rows": len(group), "labelled": len(labelled)}
        if task == "regression":
            record.update(_regression_metrics(labelled, label_column, prediction_column))
        else:
            record.update(
                _classification_metrics(labelled, task, label_column, prediction_column, proba)
            )
        records.append(record)
    metric_columns = (
        ["rmse", "mae", "r2"] if task == "regression" else ["accuracy", "f1_macro", "roc_auc"]
    )
    return pd.DataFrame.from_records(
        records, columns=["window", "rows", "labelled", *metric_columns]
    )


def _regression_metrics(frame: pd.DataFrame, label: str, prediction: str) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    if frame.empty:
        return {"rmse": math.nan, "mae": math.nan, "r2": math.nan}
    y = numeric_values(frame[label])
    p = numeric_values(frame[prediction])
    return {
        "rmse": float(math.sqrt(mean_squared_error(y, p))),
        "mae": float(mean_absolute_error(y, p)),
        "r2": float(r2_score(y, p)) if len(frame) > 1 else math.nan,
    }


def _classification_metrics(
    frame: pd.DataFrame, task: str, label: str, prediction: str, proba: list[str]
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    if frame.empty:
        return {"accuracy": math.nan, "f1_macro": math.nan, "roc_auc": math.nan}
    y = _class_strings(frame[label])
    p = _class_strings(frame[prediction])
    record = {
        "accuracy": float(accuracy_score(y, p)),
        "f1_macro": float(f1_score(y, p, average="macro")),
        "roc_auc": math.nan,
    }
    classes = [str(c)[len("proba_") :] for c in proba]
    if len(proba) >= 2 and len(set(y)) > 1 and set(y) <= set(classes):
        scores = frame[proba].to_numpy(dtype="float64")
        try:
            if task == "binary":
                # The last probability column is the positive class, as in sklearn's classes_.
                record["roc_auc"] = float(roc_auc_score(y == classes[-1], scores[:, -1]))
            else:
                record["roc_auc"] = float(
                    roc_auc_score(
                        y,
                        scores / scores.sum(axis=1, keepdims=True),
                        multi_class="ovr",
                        labels=classes,
                    )
                )
        except ValueError:
            pass
    return record


def _class_strings(series: pd.Series) -> np.ndarray:
    """Labels as text, so 1, 1.0 (a label column widened by nulls) and '1' compare equal."""
    return np.array([category_key(v) for v in series.to_numpy()], dtype=object)
