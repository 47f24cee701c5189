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
    DATETIME_TYPES,
    DUPLICATES,
    FAIL,
    IN_SET,
    IN_TYPE_LIST,
    MAX_CATEGORIES,
    NOT_NULL,
    NUMBER_TYPES,
    OF_TYPE,
    ROW_COUNT,
    WARN,
    expectation,
    python_scalar,
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


def _type_expectation(series: pd.Series) -> dict[str, Any] | None:
    dtype = series.dtype
    column = str(series.name)
    if pd.api.types.is_bool_dtype(dtype):
        return expectation(IN_TYPE_LIST, {"column": column, "type_list": BOOLEAN_TYPES}, family="boolean")
    if pd.api.types.is_numeric_dtype(dtype):
        return expectation(IN_TYPE_LIST, {"column": column, "type_list": NUMBER_TYPES}, family="number")
    if pd.api.types.is_datetime64_dtype(dtype):  # time-zone-aware columns get no type check
        return expectation(IN_TYPE_LIST, {"column": column, "type_list": DATETIME_TYPES}, family="datetime")
    if pd.api.types.is_string_dtype(dtype):
        # `of_type` compares the dtype's scalar type, so every pandas string storage passes.
        return expectation(OF_TYPE, {"column": column, "type_": "str"}, family="text")
    return None


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
    dtype = series.dtype
    values = series.dropna()
    classification = role == "target" and task_type in {"binary", "multiclass"}
    if classification:
        classes = sorted((python_scalar(v) for v in values.unique()), key=str)
        return [expectation(IN_SET, {"column": column, "value_set": classes}, role="target classes")]
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return []
    if pd.api.types.is_numeric_dtype(dtype):
        bounds = widened_range(series, spec.contract.range_tolerance)
        if bounds is None:
            return []
        low, high = bounds
        observed = widened_range(series, 0.0)
        return [
            expectation(
                BETWEEN,
                {"column": column, "min_value": low, "max_value": high},
                observed_range=list(observed) if observed else None,
                tolerance=spec.contract.range_tolerance,
            )
        ]
    unique = values.unique()
    limit = min(MAX_CATEGORIES, max(2, len(values) // 2))
    if len(unique) == 0 or len(unique) > limit:
        return []  # free text or identifiers: a value set would only freeze today's values
    level = WARN if spec.contract.allow_unseen_categories else FAIL
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
    """The contract for batches to be scored: no target, any row count, duplicates allowed."""
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
        kept.append(item)
    result["expectations"] = kept
    result["name"] = f"{suite['name']}.serving"
    result.setdefault("meta", {}).setdefault("conveyor", {})["serving"] = True
    return result
