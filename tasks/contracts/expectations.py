"""The contract's vocabulary: expectation types, type families, Conveyor's own checks, one expectation."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

FAIL, WARN = "fail", "warn"
SEVERITY = {FAIL: "critical", WARN: "warning"}
MAX_CATEGORIES = 50
EXAMPLES = 3

# Type families, written in the names GX's pandas type checks resolve (verified in the unit tests).
NUMBER_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype",
]  # fmt: skip
BOOLEAN_TYPES = ["bool", "BooleanDtype"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]
DATE_TYPES = ["date"]  # `datetime.date` objects in an object column, as pyarrow reads ISO dates
ZONED_TYPE = "Timestamp"  # the scalar type of every zoned datetime64 dtype, whatever its unit and zone

COLUMN_SET = "expect_table_columns_to_match_set"
ROW_COUNT = "expect_table_row_count_to_be_between"
DUPLICATES = "expect_compound_columns_to_be_unique"
IN_TYPE_LIST = "expect_column_values_to_be_in_type_list"
OF_TYPE = "expect_column_values_to_be_of_type"
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
MATCH_REGEX = "expect_column_values_to_match_regex"
TYPE_CHECKS = {IN_TYPE_LIST, OF_TYPE}

# Conveyor's own checks, named like expectations in the report.
TARGET_NOT_NULL = "conveyor.target_not_null"
TARGET_CLASSES = "conveyor.target_has_two_classes"
FINITE = "conveyor.finite_values"
LEAKAGE = "conveyor.no_label_leakage"
NUMBERS_AS_TEXT = "conveyor.numbers_not_text"

# The order problems are told in: the first explains most of the rest.
PRIORITY = {
    COLUMN_SET: 0, ROW_COUNT: 1, IN_TYPE_LIST: 2, OF_TYPE: 2, TARGET_NOT_NULL: 3, TARGET_CLASSES: 3,
    LEAKAGE: 4, FINITE: 5, NOT_NULL: 6, BETWEEN: 7, IN_SET: 7, MATCH_REGEX: 7, DUPLICATES: 8, NUMBERS_AS_TEXT: 9,
}  # fmt: skip


def expectation(kind: str, kwargs: dict[str, Any], on_violation: str = FAIL, **meta: Any) -> dict[str, Any]:
    """One expectation in GX's JSON shape, with Conveyor's `on_violation` in its meta."""
    return {
        "type": kind,
        "kwargs": kwargs,
        "meta": {"on_violation": on_violation, **meta},
        "severity": SEVERITY[on_violation],
    }


def python_scalar(value: Any) -> Any:
    """A JSON-ready Python scalar from a numpy or pandas one."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, date)):  # a date is no JSON type: its ISO text is
        return value.isoformat()
    return value
