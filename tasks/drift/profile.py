"""The reference profile: what monitoring knows of the training data, stored with each model.

The profile is built once at training time and is strict JSON (no NaN or infinity), so it can be
logged with the model and read back anywhere. Monitoring reads only the profile and the current
batch: binned counts for PSI, a small row sample for the KS test and the domain classifier.
The outer bin edges -inf and +inf are implicit so that the profile stays strict JSON; nulls are
counted in a bucket of their own, so a surge of missing values reads as drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conveyor.errors import DataError
from tasks.drift.stats import (
    bin_counts,
    category_counts,
    category_key,
    fraction,
    is_null,
    json_float,
    json_floats,
    numeric_values,
)

PROFILE_VERSION = 1
OTHER = "__other__"
TOP_CATEGORIES = 50
SAMPLE_ROWS = 2_000


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
        "metrics": {str(k): json_float(v) for k, v in metrics.items()},
    }
    _profile_columns(profile, frame, list(numeric), list(categorical), bins, sample_index)
    if predictions is not None:
        pred_frame = predictions.to_frame() if isinstance(predictions, pd.Series) else predictions
        pred_numeric, pred_categorical = _prediction_kinds(pred_frame)
        pred_index = np.sort(rng.choice(len(pred_frame), size=min(len(pred_frame), sample_rows), replace=False))
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
        sample[name] = json_floats(values[sample_index])
    for name in categorical:
        section["categorical"][name] = _categorical_profile(frame[name])
        sample[name] = [None if is_null(v) else category_key(v) for v in frame[name].iloc[sample_index].to_numpy()]


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
        "null_fraction": fraction(nulls, values.size),
        "mean": json_float(finite.mean()) if finite.size else None,
        "std": json_float(finite.std()) if finite.size else None,
        "min": json_float(present.min()) if present.size else None,
        "max": json_float(present.max()) if present.size else None,
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
        "null_fraction": fraction(nulls, len(series)),
    }


def _prediction_kinds(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Float columns (probabilities, regression outputs) are binned; labels are categories."""
    numeric = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c].dtype)]
    categorical = [c for c in frame.columns if c not in numeric]
    return [str(c) for c in numeric], [str(c) for c in categorical]
