"""A failed expectation in words a user can act on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.contracts.expectations import (
    BETWEEN,
    COLUMN_SET,
    DUPLICATES,
    EXAMPLES,
    FAIL,
    IN_SET,
    MATCH_REGEX,
    NOT_NULL,
    ROW_COUNT,
    TYPE_CHECKS,
)
from tasks.contracts.families import BOOLEAN, DATE, DATE_FAMILIES, DATETIME, DATETIME_TZ, NUMBER, TEXT, unparsed
from tasks.contracts.report import Failure, counted, distinct_examples, for_example, quoted_names, show


def _column_set_problem(expected: list[str], frame: pd.DataFrame) -> tuple[str, str | None]:
    missing = [c for c in expected if c not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in expected]
    column = next(iter(missing + extra), None)
    if len(missing) == 1 and len(extra) == 1:
        return (
            f"column {missing[0]!r} is missing and column {extra[0]!r} is not in the contract (renamed?)",
            column,
        )
    parts = []
    if missing:
        parts.append(f"column{'s' * (len(missing) > 1)} {quoted_names(missing)} missing")
    if extra:
        parts.append(f"unexpected column{'s' * (len(extra) > 1)} {quoted_names(extra)} (not in the contract)")
    return "; ".join(parts) or "the columns differ from the contract", column


_FAMILY_WORDS = {
    NUMBER: "numbers", TEXT: "text", BOOLEAN: "booleans", DATE: "dates", DATETIME: "date-times without a time zone",
    DATETIME_TZ: "date-times with a time zone",
}  # fmt: skip


def _bound(value: Any, family: str | None) -> str:
    return str(value) if family in DATE_FAMILIES else show(value)


def _spellings(values: list[str]) -> str:
    listed = ", ".join(repr(v) for v in values)
    return f"spelling{'s' * (len(values) > 1)} {listed}"


def describe_failure(item: dict[str, Any], result: dict[str, Any], frame: pd.DataFrame, target: str) -> Failure:
    """A failed expectation in words a user can act on."""
    kind, kwargs = item["type"], item.get("kwargs", {})
    column = kwargs.get("column")
    level = item.get("meta", {}).get("on_violation", FAIL)
    count = result.get("unexpected_count")
    examples = distinct_examples(result.get("partial_unexpected_list") or [])
    indexes = result.get("partial_unexpected_index_list") or []
    rows = [int(i) for i in indexes[:EXAMPLES] if isinstance(i, (int, np.integer))]

    def failure(detail: str, **extra: Any) -> Failure:
        fields = {"unexpected_count": count, "examples": examples, "rows": rows, **extra}
        return Failure(kind, column, level, detail, **fields)

    if kind == COLUMN_SET:
        detail, column = _column_set_problem(list(kwargs.get("column_set", [])), frame)
        return failure(detail, examples=[], rows=[], table_level=True)
    if kind == ROW_COUNT:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        need = f"at least {low}" if high is None else f"between {low} and {high}"
        return failure(f"{len(frame)} rows, the contract needs {need}", table_level=True)
    if kind == DUPLICATES:
        share = 100 * (count or 0) / max(len(frame), 1)
        allowed = 100 * (1 - kwargs.get("mostly", 1.0))
        again = f"{result['repeats']} rows repeat another row exactly; " if "repeats" in result else ""
        return failure(
            f"{again}{count} rows ({share:.1f}%) have an identical twin, the contract allows at "
            f"most {allowed:g}% (contract.max_duplicate_fraction)",
            table_level=True,
        )
    if kind in TYPE_CHECKS:
        family = item.get("meta", {}).get("family") or kwargs.get("type_") or "another type"
        observed = frame[column].dtype if column in frame.columns else result.get("observed_value")
        if column in frame.columns:
            examples = distinct_examples(unparsed(frame[column], family).head(100).tolist()) or examples
        expected = _FAMILY_WORDS.get(family, family)
        return failure(f"holds {observed} values, the contract expects {expected}{for_example(examples)}")
    if kind == NOT_NULL:
        role = " (target)" if column == target else ""
        if kwargs.get("mostly") is not None:
            share = 100 * (count or 0) / max(len(frame), 1)
            allowed = 100 * (1 - kwargs["mostly"])
            return failure(
                f"{counted(count, 'missing value')}{role} ({share:.1f}%), the contract allows at most {allowed:.1f}%",
                examples=[],
            )
        where = f" (e.g. rows {', '.join(map(str, rows))})" if rows else ""
        return failure(f"{counted(count, 'missing value')}{role}, the contract allows none{where}", examples=[])
    if kind == BETWEEN:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        family = item.get("meta", {}).get("family")
        if family in DATE_FAMILIES and (low is None) != (high is None):  # an open date range reads as words
            side = f"before {low}" if high is None else f"after {high}"
            return failure(f"{counted(count, 'value')} {side}{for_example(examples)}")
        low_text = "-inf" if low is None else _bound(low, family)
        high_text = "inf" if high is None else _bound(high, family)
        return failure(f"{counted(count, 'value')} outside [{low_text}, {high_text}]{for_example(examples)}")
    if kind == IN_SET:
        allowed_values = kwargs.get("value_set", [])
        listed = ", ".join(show(v) for v in allowed_values[:6])
        listed += ", ..." if len(allowed_values) > 6 else ""
        what = "the target's classes" if column == target else "the contract's categories"
        return failure(f"{counted(count, 'value')} not in {what} [{listed}]{for_example(examples)}")
    if kind == MATCH_REGEX and (spellings := item.get("meta", {}).get("missing_spellings")):
        what = f"neither numbers nor the missing-value {_spellings(spellings)}"
        return failure(f"{counted(count, 'value')} {what}{for_example(examples)}")
    details = [f"{kind} failed"]
    if (observed := result.get("observed_value")) is not None:
        details.append(f"observed {show(observed)}")
    if count is not None:
        details.append(f"{counted(count, 'unexpected value')}{for_example(examples)}")
    return failure(", ".join(details))
