"""What kind of values a column holds, as the loader reads a file: numbers, booleans, dates, text.

pyarrow reads an ISO date (`1970-01-01`) as `datetime.date` objects in an object column, a
date-time as `datetime64`, one with a zone or offset as `datetime64[..., UTC]`, and TRUE/FALSE
with a blank as `bool`/`None` objects: each is recognised here, not mistaken for text.
"""

from __future__ import annotations

import re

import pandas as pd

BOOLEAN, NUMBER, DATE, DATETIME, DATETIME_TZ, TEXT = "boolean", "number", "date", "datetime", "datetime_tz", "text"
DATE_FAMILIES = (DATE, DATETIME, DATETIME_TZ)

# Spellings of "missing" that pyarrow does not read as missing (it already takes '', NA, N/A,
# NULL, NaN, #N/A and a few more): one of them in a column of numbers makes the column text.
MISSING_SPELLINGS = frozenset(
    {"?", "-", "--", "---", ".", "*", "na", "n.a.", "n/a", "nan", "none", "null", "nil", "missing", "unknown",
     "#n/a", "#na", "not available", "no data"}
)  # fmt: skip
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def value_family(series: pd.Series) -> str | None:
    """The family of a column's values; None for anything else (lists, mixed objects)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMBER
    if isinstance(dtype, pd.DatetimeTZDtype):
        return DATETIME_TZ
    if pd.api.types.is_datetime64_dtype(dtype):
        return DATETIME
    if pd.api.types.is_object_dtype(dtype):
        # An object column is named by what it holds; a mix (numbers and words, dates and
        # date-times) has no one family, and no type check is better than a wrong one.
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        return {"boolean": BOOLEAN, "date": DATE, "string": TEXT, "empty": TEXT}.get(inferred)
    if pd.api.types.is_string_dtype(dtype):
        return TEXT
    return None


def missing_spellings(series: pd.Series) -> list[str] | None:
    """The spellings of missing (`?`, `-`, `n.a.`) that make a column of numbers read as text, or None.

    None unless most values are numbers and every other value is one of MISSING_SPELLINGS: a
    column of numbers with a few words in it is text, and says so.
    """
    if value_family(series) != TEXT:
        return None
    values = series.dropna()
    head = values.iloc[:1000]  # most text columns hold no numbers: a glance at the head settles them
    if head.empty or pd.to_numeric(head, errors="coerce").notna().sum() < len(head) / 2:
        return None
    distinct = pd.Series(values.unique())
    others = distinct[pd.to_numeric(distinct, errors="coerce").isna()].astype(str)
    if others.empty:
        return None
    spellings = sorted(set(others))
    if len(spellings) > 3 or any(value.strip().lower() not in MISSING_SPELLINGS for value in spellings):
        return None
    return spellings


def numbers_or(spellings: list[str]) -> str:
    """A regex a value matches when it is a number or one of the spellings (numbers typed as such pass)."""
    alternatives = "|".join([_NUMBER, *(re.escape(value.strip()) for value in spellings)])
    return rf"^\s*(?:{alternatives})\s*$"


def unparsed(series: pd.Series, family: str) -> pd.Series:
    """The values of a column that are not of `family` (text that does not read as a number, a date...)."""
    present = series.dropna()
    if family == NUMBER:
        return present[pd.to_numeric(present, errors="coerce").isna()]
    if family in DATE_FAMILIES:
        return present[pd.to_datetime(present.astype(str), errors="coerce", format="ISO8601", utc=True).isna()]
    if family == BOOLEAN:
        spelled = present.astype(str).str.strip().str.lower()
        return present[~spelled.isin(["true", "false", "1", "0"])]
    return present.iloc[:0]
