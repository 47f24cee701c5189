"""Drafting a contract from data, applying the spec's overrides, and the serving contract."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import pandas as pd

from conveyor.spec import ExpectationOverride, PipelineSpec
from tasks.contracts.expectations import (
    BETWEEN,
    BOOLEAN_TYPES,
    COLUMN_SET,
    DATE_TYPES,
    DATETIME_TYPES,
    DUPLICATES,
    FAIL,
    IN_SET,
    IN_TYPE_LIST,
    MATCH_REGEX,
    MAX_CATEGORIES,
    NOT_NULL,
    NUMBER_TYPES,
    OF_TYPE,
    ROW_COUNT,
    WARN,
    ZONED_TYPE,
    expectation,
    python_scalar,
)
from tasks.contracts.families import (
    BOOLEAN,
    DATE,
    DATE_FAMILIES,
    DATETIME,
    DATETIME_TZ,
    NUMBER,
    TEXT,
    missing_spellings,
    numbers_or,
    value_family,
)
from tasks.data import infer_task


def _round_out(value: float, step: float, down: bool) -> float:
    scaled = math.floor(value / step) if down else math.ceil(value / step)
    digits = max(0, -math.floor(math.log10(step)))
    return round(scaled * step, digits)


def widened_range(values: pd.Series, tolerance: float) -> tuple[float, float] | None:
    """[min, max] of the finite values, widened by `tolerance` x the span and rounded outward.

    A column that never went below zero keeps zero as its floor: counts stay non-negative.
    """
    array = values.to_numpy(dtype="float64", na_value=np.nan)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    span = high - low
    pad = tolerance * (span if span > 0 else max(abs(high), 1.0))
    if pad > 0:
        step = 10.0 ** (math.floor(math.log10(pad)) - 1)
        new_low, new_high = _round_out(low - pad, step, True), _round_out(high + pad, step, False)
    else:
        new_low, new_high = low, high
    if low >= 0:
        new_low = max(0.0, new_low)
    if pd.api.types.is_integer_dtype(values.dtype):
        return float(math.floor(new_low)), float(math.ceil(new_high))
    return new_low, new_high


_TYPE_CHECKS: dict[str, tuple[str, dict[str, Any]]] = {
    BOOLEAN: (IN_TYPE_LIST, {"type_list": BOOLEAN_TYPES}),
    NUMBER: (IN_TYPE_LIST, {"type_list": NUMBER_TYPES}),
    DATE: (IN_TYPE_LIST, {"type_list": DATE_TYPES}),
    DATETIME: (IN_TYPE_LIST, {"type_list": DATETIME_TYPES}),
    DATETIME_TZ: (OF_TYPE, {"type_": ZONED_TYPE}),
    # `of_type` compares the dtype's scalar type, so every pandas string storage passes.
    TEXT: (OF_TYPE, {"type_": "str"}),
}


def _type_expectation(series: pd.Series) -> dict[str, Any] | None:
    family = value_family(series)
    if family is None or missing_spellings(series):
        return None  # numbers with a spelling of missing: the value check says what may be there
    kind, kwargs = _TYPE_CHECKS[family]
    meta: dict[str, Any] = {"family": family}
    if family == DATETIME_TZ:
        meta["time_zone"] = str(series.dt.tz)
    return expectation(kind, {"column": str(series.name), **kwargs}, **meta)


_TIME_STEPS = [pd.Timedelta(days=1), pd.Timedelta(hours=1), pd.Timedelta(minutes=1), pd.Timedelta(seconds=1)]


def _iso(moment: pd.Timestamp, family: str) -> str:
    return moment.date().isoformat() if family == DATE else moment.isoformat()


def widened_dates(series: pd.Series, family: str, tolerance: float) -> tuple[str, str] | None:
    """[first, last] of a date column as ISO text, widened by `tolerance` x the span like numbers.

    Dates round outward to whole days, date-times to the largest of day, hour, minute, second
    under a tenth of the widening; zoned date-times are given in UTC. A single date widens by a day.
    """
    values = series.dropna()
    if values.empty:
        return None
    try:
        stamps = pd.to_datetime(values) if family == DATE else values
        if family == DATETIME_TZ:
            stamps = stamps.dt.tz_convert("UTC")
        low, high = stamps.min(), stamps.max()
        span = high - low
        pad = span * tolerance if span > pd.Timedelta(0) else pd.Timedelta(days=1) * (tolerance > 0)
        if pad > pd.Timedelta(0):
            if family == DATE:
                step = _TIME_STEPS[0]
            else:
                step = next((s for s in _TIME_STEPS if s <= pad / 10), _TIME_STEPS[-1])
            low, high = (low - pad).floor(step), (high + pad).ceil(step)
    except (OverflowError, ValueError):  # dates beyond what pandas holds (year 1, year 9999): no range
        return None
    return _iso(low, family), _iso(high, family)


def _null_expectation(series: pd.Series, tolerance: float, required: bool) -> dict[str, Any] | None:
    column = str(series.name)
    missing = float(series.isna().mean()) if len(series) else 0.0
    if required or missing == 0:
        return expectation(NOT_NULL, {"column": column}, observed_missing_fraction=round(missing, 4))
    allowed = min(1.0, missing * (1 + tolerance) + 0.05)
    if allowed >= 1:
        return None
    return expectation(
        NOT_NULL,
        {"column": column, "mostly": round(1 - allowed, 4)},
        observed_missing_fraction=round(missing, 4),
    )


def _value_expectations(
    series: pd.Series, role: str, task_type: str | None, spec: PipelineSpec
) -> list[dict[str, Any]]:
    column = str(series.name)
    values = series.dropna()
    classification = role == "target" and task_type in {"binary", "multiclass"}
    if classification:
        classes = sorted((python_scalar(v) for v in values.unique()), key=str)
        return [expectation(IN_SET, {"column": column, "value_set": classes}, role="target classes")]
    family = value_family(series)
    tolerance = spec.contract.range_tolerance
    # A segment column's values name the segments: a new one is a segment that appears, not bad data.
    segment = FAIL if spec.segments is None or column not in spec.segments.by else WARN
    if family in DATE_FAMILIES:
        dates = widened_dates(series, str(family), tolerance)
        if dates is None:
            return []
        return [
            expectation(
                BETWEEN,
                {"column": column, "min_value": dates[0], "max_value": dates[1]},
                family=family,
                observed_range=list(widened_dates(series, str(family), 0.0) or ()),
                tolerance=tolerance,
            )
        ]
    if family == BOOLEAN:
        return []
    if family == NUMBER:
        bounds = widened_range(series, tolerance)
        if bounds is None:
            return []
        low, high = bounds
        observed = widened_range(series, 0.0)
        return [
            expectation(
                BETWEEN,
                {"column": column, "min_value": low, "max_value": high},
                segment,
                observed_range=list(observed) if observed else None,
                tolerance=tolerance,
            )
        ]
    if spellings := missing_spellings(series):
        return [
            expectation(
                MATCH_REGEX,
                {"column": column, "regex": numbers_or(spellings)},
                family=NUMBER,
                missing_spellings=spellings,
                note="numbers, with these spellings of missing: the file reads as text",
            )
        ]
    if family != TEXT:
        return []  # a mix of kinds: no category set would describe it
    unique = values.unique()
    limit = min(MAX_CATEGORIES, max(2, len(values) // 2))
    if len(unique) == 0 or len(unique) > limit:
        return []  # free text or identifiers: a value set would only freeze today's values
    level = WARN if spec.contract.allow_unseen_categories else segment
    categories = sorted((python_scalar(v) for v in unique), key=str)
    return [expectation(IN_SET, {"column": column, "value_set": categories}, level, role="categories")]


def _role(spec: PipelineSpec, column: str) -> str:
    if column == spec.data.target:
        return "target"
    if column == spec.data.id_column:
        return "id"
    if column in spec.data.drop:
        return "dropped"
    if column == spec.data.split.time_column:
        return "time"
    return "feature"


def default_min_rows(rows: int) -> int:
    """A tenth of the rows the contract was drafted from: a much smaller export is suspect."""
    return max(1, rows // 10)


def draft_contract(spec: PipelineSpec, frame: pd.DataFrame) -> dict[str, Any]:
    """Draft an expectation suite from a frame: columns, types, nulls, ranges, categories."""
    target = spec.data.target
    task_type = spec.task
    if task_type is None and target in frame.columns:
        task_type = infer_task(frame[target])
    tolerance = spec.contract.range_tolerance
    min_rows = spec.contract.min_rows or default_min_rows(len(frame))
    expectations = [
        expectation(COLUMN_SET, {"column_set": [str(c) for c in frame.columns], "exact_match": True}),
        expectation(ROW_COUNT, {"min_value": min_rows, "max_value": None}, observed_rows=len(frame)),
    ]
    if spec.contract.max_duplicate_fraction < 1:
        compared = [str(c) for c in frame.columns if c != spec.data.id_column]
        expectations.append(
            expectation(
                DUPLICATES,
                {
                    "column_list": compared,
                    "mostly": round(1 - spec.contract.max_duplicate_fraction, 6),
                    "ignore_row_if": "never",
                },
                note="share of rows that have an identical twin (the id column aside)",
            )
        )
    for column in frame.columns:
        series = frame[column]
        role = _role(spec, str(column))
        if role == "dropped":
            continue  # not used by the model: only its presence is part of the contract
        if (typed := _type_expectation(series)) is not None:
            expectations.append(typed)
        if (nulls := _null_expectation(series, tolerance, required=role == "target")) is not None:
            expectations.append(nulls)
        if role in {"feature", "target"}:
            expectations.extend(_value_expectations(series, role, task_type, spec))
    suite = {
        "name": f"{spec.name}.contract",
        "id": None,
        "expectations": expectations,
        "meta": {
            "great_expectations_version": package_version("great_expectations"),
            "conveyor": {
                "model": spec.name,
                "target": target,
                "task": task_type,
                "drafted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "drafted_from_rows": len(frame),
                "range_tolerance": tolerance,
            },
        },
        "notes": (
            "Drafted by Conveyor from the data; review it and commit it. Edit kwargs to change "
            "a check, set meta.on_violation to 'warn' to only report it, or delete it. Spec "
            "overrides (contract.expectations) are applied on top at every run."
        ),
    }
    return apply_overrides(suite, spec.contract.expectations)


def _override(item: ExpectationOverride) -> dict[str, Any]:
    kwargs = dict(item.kwargs)
    if item.column is not None:
        kwargs["column"] = item.column
    return expectation(item.type, kwargs, item.on_violation, origin="spec")


def apply_overrides(suite: dict[str, Any], overrides: Iterable[ExpectationOverride]) -> dict[str, Any]:
    """The suite with each override replacing the expectation of its type and column, or added."""
    result = copy.deepcopy(suite)
    expectations: list[dict[str, Any]] = result["expectations"]
    for item in overrides:
        replacement = _override(item)
        for index, existing in enumerate(expectations):
            if existing.get("type") == item.type and existing.get("kwargs", {}).get("column") == item.column:
                expectations[index] = replacement
                break
        else:
            expectations.append(replacement)
    return result


def serving_contract(suite: dict[str, Any], target: str) -> dict[str, Any]:
    """The contract for batches to be scored: no target, any row count, duplicates allowed, and
    dates with no upper bound (the rows to score come after the ones the model learnt from)."""
    result = copy.deepcopy(suite)
    kept = []
    for item in result["expectations"]:
        kind, kwargs = item["type"], item.get("kwargs", {})
        if kwargs.get("column") == target or kind == DUPLICATES:
            continue
        if kind == COLUMN_SET:
            kwargs["column_set"] = [c for c in kwargs["column_set"] if c != target]
        if kind == ROW_COUNT:
            kwargs["min_value"], kwargs["max_value"] = 1, None
        if kind == BETWEEN and item.get("meta", {}).get("family") in DATE_FAMILIES:
            kwargs["max_value"] = None
        kept.append(item)
    result["expectations"] = kept
    result["name"] = f"{suite['name']}.serving"
    result.setdefault("meta", {}).setdefault("conveyor", {})["serving"] = True
    return result
