"""Conveyor's own checks, the ones GX cannot express well: target sanity, infinities, label leakage.

Leakage policy: a feature that maps one-to-one onto the target (a copy, a renamed copy, a
recoding) is refused by default (`contract.leakage: fail`): such a model scores perfectly on the
holdout and is useless in production. `contract.leakage: warn` lets it train with a loud
warning; `data.drop` removes it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from conveyor.spec import PipelineSpec
from tasks.contracts.expectations import (
    EXAMPLES,
    FAIL,
    FINITE,
    LEAKAGE,
    MAX_CATEGORIES,
    NUMBERS_AS_TEXT,
    TARGET_CLASSES,
    TARGET_NOT_NULL,
    WARN,
    python_scalar,
)
from tasks.contracts.families import missing_spellings
from tasks.contracts.report import Failure, counted, distinct_examples, for_example, show
from tasks.data import feature_frame

# A leaked column determines the target; we check it on a sample first so the common case is cheap.
_LEAK_SAMPLE = 2000


def _target_problems(frame: pd.DataFrame, target: str, task_type: str | None) -> list[Failure]:
    y = frame[target]
    problems = []
    missing = y.isna().to_numpy()
    if missing.any():
        rows = [int(i) for i in np.flatnonzero(missing)[:EXAMPLES]]
        count = int(missing.sum())
        problems.append(
            Failure(
                TARGET_NOT_NULL, target, FAIL,
                f"{counted(count, 'missing target value')} (e.g. rows {', '.join(map(str, rows))}): "
                "every training row needs a label",
                count, [], rows,
            )
        )  # fmt: skip
    present = y.dropna()
    classes = present.unique()
    if len(present) and len(classes) < 2:
        what = "a constant target, every value" if task_type == "regression" else "a single class"
        problems.append(
            Failure(
                TARGET_CLASSES, target, FAIL,
                f"{what} {show(classes[0])} in {len(present)} rows: a model needs at least two "
                "target values to learn from",
                len(present), [python_scalar(classes[0])],
            )
        )  # fmt: skip
    return problems


def _infinity_problems(features: pd.DataFrame) -> list[Failure]:
    problems = []
    for column in features.columns:
        series = features[column]
        if not pd.api.types.is_float_dtype(series.dtype):
            continue  # only floats can hold infinity
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        infinite = np.isinf(values)
        if not infinite.any():
            continue
        positions = np.flatnonzero(infinite)
        examples = distinct_examples(values[positions[:100]].tolist())
        labels = [features.index[i] for i in positions[:EXAMPLES]]
        count = int(infinite.sum())
        problems.append(
            Failure(
                FINITE, str(column), FAIL,
                f"{counted(count, 'infinite value')}{for_example(examples)}: models cannot use them",
                count, examples, [int(i) for i in labels if isinstance(i, (int, np.integer))],
            )
        )  # fmt: skip
    return problems


def leaked_columns(features: pd.DataFrame, target: pd.Series) -> list[str]:
    """Features that copy the target: one-to-one with it when it has few classes, else equal to
    it or perfectly correlated (with many distinct target values any all-distinct feature would
    look one-to-one, so only a copy or a rescaled copy counts there)."""
    y = target.reset_index(drop=True)
    if y.notna().sum() < 2:
        return []
    few_classes = y.nunique() <= min(MAX_CATEGORIES, max(2, len(y) // 2))
    head = slice(0, _LEAK_SAMPLE)  # most features fail on the first rows: only survivors pay more
    y_head = y.iloc[head]
    y_codes_head = pd.factorize(y_head)[0]
    y_values = y.to_numpy(dtype="float64", na_value=np.nan) if _is_number(y) else None
    leaked = []
    for column in features.columns:
        x = features[column].reset_index(drop=True)
        if few_classes:
            copies = _one_to_one(pd.factorize(x.iloc[head])[0], y_codes_head) and _one_to_one(
                pd.factorize(x)[0], pd.factorize(y)[0]
            )
        elif y_values is not None and _is_number(x):
            x_values = x.to_numpy(dtype="float64", na_value=np.nan)
            copies = _copies(x_values[head], y_values[head]) and _copies(x_values, y_values)
        else:
            copies = x.iloc[head].equals(y_head) and x.equals(y)
        if copies:
            leaked.append(str(column))
    return leaked


def _is_number(series: pd.Series) -> bool:
    dtype = series.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _one_to_one(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    return bool(pairs["a"].is_unique and pairs["b"].is_unique)


def _copies(x: np.ndarray, y: np.ndarray) -> bool:
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or not np.array_equal(np.isnan(x), np.isnan(y)):
        return False
    xs, ys = x[both], y[both]
    if np.array_equal(xs, ys):
        return True
    if xs.std() == 0 or ys.std() == 0:
        return False
    return bool(abs(np.corrcoef(xs, ys)[0, 1]) >= 1 - 1e-9)


def _numbers_as_text(features: pd.DataFrame) -> list[Failure]:
    problems = []
    for column in features.columns:
        if not (spellings := missing_spellings(features[column])):
            continue
        count = int(features[column].isin(spellings).sum())
        listed = ", ".join(repr(value) for value in spellings)
        problems.append(
            Failure(
                NUMBERS_AS_TEXT, str(column), WARN,
                f"numbers, but {counted(count, 'value')} {listed} (a spelling of missing?) "
                f"make{'s' * (count == 1)} the column text",
                count, list(spellings),
            )
        )  # fmt: skip
    return problems


def own_check_names(spec: PipelineSpec, frame: pd.DataFrame) -> list[str]:
    """The own checks that run on a frame: the target's only when the frame holds it."""
    names = [FINITE, NUMBERS_AS_TEXT]
    if spec.data.target in frame.columns:
        names += [TARGET_NOT_NULL, TARGET_CLASSES, LEAKAGE]
    return names


def own_checks(frame: pd.DataFrame, spec: PipelineSpec, task_type: str | None) -> list[Failure]:
    """The checks GX cannot express well: target sanity, infinities, numbers read as text, label leakage."""
    target = spec.data.target
    features = feature_frame(spec, frame)
    problems = _infinity_problems(features) + _numbers_as_text(features)
    if target in frame.columns:
        problems += _target_problems(frame, target, task_type)
        level = spec.contract.leakage
        escape = " or set contract.leakage: warn" if level == FAIL else ""
        for column in leaked_columns(features, frame[target]):
            problems.append(
                Failure(
                    LEAKAGE, column, level,
                    f"copies the target {target!r} (its values map one to one onto the target's): "
                    f"label leakage; drop it with data.drop in the spec{escape}",
                )
            )  # fmt: skip
    return problems
