"""The reference profile: what monitoring knows of the training data, stored with each model.

The profile is built once at training time and is strict JSON (no NaN or infinity), so it can be
logged with the model and read back anywhere. Monitoring reads only the profile and the current
batch: binned counts for PSI, a small row sample for the KS test and the domain classifier.
The outer bin edges -inf and +inf are implicit so that the profile stays strict JSON; nulls are
counted in a bucket of their own, so a surge of missing values reads as drift.

In memory a numeric sample column is a list of floats (None for a null). In the file (version 2)
it is the base64 of its little-endian float64 values, NaN for a null: writing 2,000 rows x 20
columns of float text took 15 ms of a segment model's 0.2 s of overhead, and its bytes are exact.
Version 1 files (the lists as JSON) still load.
"""

from __future__ import annotations

import base64
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

PROFILE_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
    target.write_text(profile_text(profile), encoding="utf-8")
    return target


def load_profile(path: str | Path) -> dict[str, Any]:
    """Read a profile written by `save_profile`."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{source}: cannot read the reference profile ({exc})") from None
    return parse_profile(text, str(source))


def profile_text(profile: Mapping[str, Any]) -> str:
    """The profile as the strict JSON of a version 2 file: numeric samples packed."""
    packed = dict(profile, version=PROFILE_VERSION, sample=_packed_sample(profile["sample"], profile["numeric"]))
    if (prediction := profile.get("prediction")) is not None:
        packed["prediction"] = dict(prediction, sample=_packed_sample(prediction["sample"], prediction["numeric"]))
    return json.dumps(packed, allow_nan=False, separators=(",", ":"))


def parse_profile(text: str, source: str) -> dict[str, Any]:
    """A profile from its file's text (version 1 or 2), numeric samples as lists again; `source`
    names the file in the error."""
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{source}: cannot read the reference profile ({exc})") from None
    if not isinstance(profile, dict) or profile.get("version") not in READABLE_VERSIONS:
        raise DataError(f"{source}: not a reference profile of a version this Conveyor reads {READABLE_VERSIONS}")
    try:
        for section in (profile, profile.get("prediction")):
            if isinstance(section, dict) and isinstance(section.get("sample"), dict):
                columns = section["sample"].get("columns", {})
                for name, values in columns.items():
                    if isinstance(values, str):
                        columns[name] = _unpack(values)
    except ValueError as exc:
        raise DataError(f"{source}: a packed sample column cannot be read ({exc})") from None
    return profile


def _packed_sample(sample: Mapping[str, Any], numeric: Mapping[str, Any]) -> dict[str, Any]:
    columns = {name: _pack(values) if name in numeric else values for name, values in sample["columns"].items()}
    return dict(sample, columns=columns)


def _pack(values: Sequence[float | None]) -> str:
    """A numeric sample column as base64 float64 (None and non-finite values as NaN)."""
    array = np.asarray(values, dtype="<f8")  # None becomes NaN
    array = np.where(np.isfinite(array), array, np.nan)
    return base64.b64encode(array.tobytes()).decode("ascii")


def _unpack(text: str) -> list[float | None]:
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 8:
        raise ValueError("its length is not a whole number of float64 values")
    return json_floats(np.frombuffer(raw, dtype="<f8"))


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
