"""Data contracts: a Great Expectations suite per spec, drafted from data, kept as JSON, enforced.

The contract is a GX 1.x expectation suite in GX's own JSON shape (`to_json_dict()`), stored
beside the spec as `pipelines/<name>.expectations.json` so it can be reviewed and edited.
Each expectation carries `meta.on_violation`: `fail` refuses the data, `warn` only reports.

GX validates a frame in an ephemeral context; a few checks GX cannot express well run here too:
infinite values in features, the target's classes, label leakage. Leakage policy: a feature that
maps one-to-one onto the target (a copy, a renamed copy, a recoding) is refused by default
(`contract.leakage: fail`): such a model scores perfectly on the holdout and is useless in
production. `contract.leakage: warn` lets it train with a loud warning; `data.drop` removes it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from conveyor.errors import DataError, SpecError
from conveyor.spec import ExpectationOverride, PipelineSpec, find_spec
from tasks.data import Dataset, display_path, feature_frame, infer_task, load_dataset

logger = logging.getLogger(__name__)

FAIL, WARN = "fail", "warn"
SEVERITY = {FAIL: "critical", WARN: "warning"}
MAX_CATEGORIES = 50
EXAMPLES = 3
# A leaked column determines the target; we check it on a sample first so the common case is cheap.
_LEAK_SAMPLE = 2000

# Type families, written in the names GX's pandas type checks resolve (verified in the unit tests).
NUMBER_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype",
]  # fmt: skip
BOOLEAN_TYPES = ["bool", "BooleanDtype"]
DATETIME_TYPES = ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"]

COLUMN_SET = "expect_table_columns_to_match_set"
ROW_COUNT = "expect_table_row_count_to_be_between"
DUPLICATES = "expect_compound_columns_to_be_unique"
IN_TYPE_LIST = "expect_column_values_to_be_in_type_list"
OF_TYPE = "expect_column_values_to_be_of_type"
NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
TYPE_CHECKS = {IN_TYPE_LIST, OF_TYPE}

# Conveyor's own checks, named like expectations in the report.
TARGET_NOT_NULL = "conveyor.target_not_null"
TARGET_CLASSES = "conveyor.target_has_two_classes"
FINITE = "conveyor.finite_values"
LEAKAGE = "conveyor.no_label_leakage"
CONVEYOR_CHECKS = 4

# The order problems are told in: the first explains most of the rest.
_PRIORITY = {
    COLUMN_SET: 0, ROW_COUNT: 1, IN_TYPE_LIST: 2, OF_TYPE: 2, TARGET_NOT_NULL: 3, TARGET_CLASSES: 3,
    LEAKAGE: 4, FINITE: 5, NOT_NULL: 6, BETWEEN: 7, IN_SET: 7, DUPLICATES: 8,
}  # fmt: skip


# --- drafting -------------------------------------------------------------------------------


def _expectation(
    kind: str, kwargs: dict[str, Any], on_violation: str = FAIL, **meta: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "kwargs": kwargs,
        "meta": {"on_violation": on_violation, **meta},
        "severity": SEVERITY[on_violation],
    }


def _python(value: Any) -> Any:
    """A JSON-ready Python scalar from a numpy or pandas one."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


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
        return _expectation(
            IN_TYPE_LIST, {"column": column, "type_list": BOOLEAN_TYPES}, family="boolean"
        )
    if pd.api.types.is_numeric_dtype(dtype):
        return _expectation(
            IN_TYPE_LIST, {"column": column, "type_list": NUMBER_TYPES}, family="number"
        )
    if pd.api.types.is_datetime64_dtype(dtype):  # time-zone-aware columns get no type check
        return _expectation(
            IN_TYPE_LIST, {"column": column, "type_list": DATETIME_TYPES}, family="datetime"
        )
    if pd.api.types.is_string_dtype(dtype):
        # `of_type` compares the dtype's scalar type, so every pandas string storage passes.
        return _expectation(OF_TYPE, {"column": column, "type_": "str"}, family="text")
    return None


def _null_expectation(series: pd.Series, tolerance: float, required: bool) -> dict[str, Any] | None:
    column = str(series.name)
    missing = float(series.isna().mean()) if len(series) else 0.0
    if required or missing == 0:
        return _expectation(
            NOT_NULL, {"column": column}, observed_missing_fraction=round(missing, 4)
        )
    allowed = min(1.0, missing * (1 + tolerance) + 0.05)
    if allowed >= 1:
        return None
    return _expectation(
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
        classes = sorted((_python(v) for v in values.unique()), key=str)
        return [
            _expectation(IN_SET, {"column": column, "value_set": classes}, role="target classes")
        ]
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return []
    if pd.api.types.is_numeric_dtype(dtype):
        bounds = widened_range(series, spec.contract.range_tolerance)
        if bounds is None:
            return []
        low, high = bounds
        observed = widened_range(series, 0.0)
        return [
            _expectation(
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
    categories = sorted((_python(v) for v in unique), key=str)
    return [
        _expectation(IN_SET, {"column": column, "value_set": categories}, level, role="categories")
    ]


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
        _expectation(
            COLUMN_SET, {"column_set": [str(c) for c in frame.columns], "exact_match": True}
        ),
        _expectation(
            ROW_COUNT, {"min_value": min_rows, "max_value": None}, observed_rows=len(frame)
        ),
    ]
    if spec.contract.max_duplicate_fraction < 1:
        compared = [str(c) for c in frame.columns if c != spec.data.id_column]
        expectations.append(
            _expectation(
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
    return _expectation(item.type, kwargs, item.on_violation, origin="spec")


def apply_overrides(
    suite: dict[str, Any], overrides: Iterable[ExpectationOverride]
) -> dict[str, Any]:
    """The suite with each override replacing the expectation of its type and column, or added."""
    result = copy.deepcopy(suite)
    expectations: list[dict[str, Any]] = result["expectations"]
    for item in overrides:
        replacement = _override(item)
        for index, existing in enumerate(expectations):
            if (
                existing.get("type") == item.type
                and existing.get("kwargs", {}).get("column") == item.column
            ):
                expectations[index] = replacement
                break
        else:
            expectations.append(replacement)
    return result


def serving_contract(suite: dict[str, Any], target: str) -> dict[str, Any]:
    """The contract for batches to be scored: no target, any row count, duplicates allowed."""
    result = copy.deepcopy(suite)
    kept = []
    for expectation in result["expectations"]:
        kind, kwargs = expectation["type"], expectation.get("kwargs", {})
        if kwargs.get("column") == target or kind == DUPLICATES:
            continue
        if kind == COLUMN_SET:
            kwargs["column_set"] = [c for c in kwargs["column_set"] if c != target]
        if kind == ROW_COUNT:
            kwargs["min_value"], kwargs["max_value"] = 1, None
        kept.append(expectation)
    result["expectations"] = kept
    result["name"] = f"{suite['name']}.serving"
    result.setdefault("meta", {}).setdefault("conveyor", {})["serving"] = True
    return result


# --- storage --------------------------------------------------------------------------------


def _dumps(value: Any, depth: int = 0, width: int = 96) -> str:
    """Indented JSON whose lists of plain values fill lines: one expectation reads at a glance."""
    pad = "  " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad}  {json.dumps(k)}: {_dumps(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        if any(isinstance(v, (dict, list)) for v in value):
            items = [f"{pad}  {_dumps(v, depth + 1)}" for v in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        inline = json.dumps(value, allow_nan=False)
        if len(pad) + len(inline) <= width:
            return inline
        lines, line = [], ""
        for text in (json.dumps(v, allow_nan=False) for v in value):
            if line and len(pad) + 2 + len(line) + len(text) + 2 > width:
                lines.append(line)
                line = ""
            line = f"{line}, {text}" if line else text
        lines.append(line)
        return "[\n" + ",\n".join(f"{pad}  {line}" for line in lines) + f"\n{pad}]"
    return json.dumps(value, allow_nan=False)


def save_contract(suite: dict[str, Any], path: Path) -> Path:
    """Write the suite as indented JSON (atomically: a reader never sees half a contract)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(_dumps(suite) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def load_contract(path: Path) -> dict[str, Any]:
    """Read a contract; a malformed one is a spec error naming the file and the line."""
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{display_path(str(path))}: contract file not found") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise SpecError(f"{display_path(str(path))}: invalid JSON at {where}: {exc.msg}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{display_path(str(path))}: not UTF-8 text") from None
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise SpecError(
            f"{display_path(str(path))}: not an expectation suite (no 'expectations' list)"
        )
    for index, expectation in enumerate(suite["expectations"]):
        if not isinstance(expectation, dict) or not isinstance(expectation.get("type"), str):
            raise SpecError(f"{display_path(str(path))}: expectation {index} has no 'type'")
        level = expectation.get("meta", {}).get("on_violation", FAIL)
        if level not in SEVERITY:
            raise SpecError(
                f"{display_path(str(path))}: expectation {index} ({expectation['type']}): "
                f"meta.on_violation must be 'fail' or 'warn', not {level!r}"
            )
    suite.setdefault("name", path.stem)
    return suite


def contract_digest(suite: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()


def ensure_contract(spec: PipelineSpec, frame: pd.DataFrame) -> tuple[dict[str, Any], bool]:
    """The spec's contract with its overrides applied; drafted from `frame` when missing."""
    path = spec.contract_path
    if path.exists():
        return apply_overrides(load_contract(path), spec.contract.expectations), False
    suite = draft_contract(spec, frame)
    save_contract(suite, path)
    logger.info("%s: no contract yet; drafted one from this data", path)
    return suite, True


# --- validation report ----------------------------------------------------------------------


def _show(value: Any) -> str:
    value = _python(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    return str(value)


def _jsonable(value: Any) -> Any:
    value = _python(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _count(number: int | None, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _names(columns: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _distinct(values: Iterable[Any]) -> list[Any]:
    """The first few distinct values, in order (GX lists every unexpected row, repeats included)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(_show(value), value)
        if len(seen) == EXAMPLES:
            break
    return list(seen.values())


def _eg(examples: list[Any]) -> str:
    return f" (e.g. {', '.join(_show(v) for v in examples)})" if examples else ""


@dataclass
class Failure:
    """One expectation (or Conveyor check) that the data broke."""

    expectation: str
    column: str | None
    on_violation: str
    detail: str
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    file: str | None = None
    table_level: bool = False

    def text(self, source: str) -> str:
        where = display_path(self.file or source)
        if self.column is None or self.table_level:
            return f"{where}: {self.detail}"
        return f"{where}: column {self.column!r}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "on_violation": self.on_violation,
            "problem": self.detail,
            "unexpected_count": self.unexpected_count,
            "examples": [_jsonable(v) for v in self.examples],
            "rows": self.rows,
            "file": self.file,
        }


@dataclass
class ValidationReport:
    """What a frame did against its contract; `message()` is the one line a refusal prints."""

    source: str
    success: bool
    failures: list[Failure]
    warnings: list[Failure]
    rows: int
    columns: int
    expectations: int
    seconds: float = 0.0
    contract_path: str | None = None
    drafted: bool = False
    suite: dict[str, Any] | None = None

    def message(self) -> str:
        if self.failures:
            more = len(self.failures) - 1
            tail = (
                f" (and {_count(more, 'more problem')}: see the validation report)" if more else ""
            )
            return self.failures[0].text(self.source) + tail
        checks = f"{self.rows} rows pass the contract ({self.expectations} checks)"
        passed = f"{display_path(self.source)}: {checks}"
        if self.warnings:
            first = self.warnings[0].text(self.source)
            return f"{passed} with {_count(len(self.warnings), 'warning')}: {first}"
        return passed

    def to_dict(self) -> dict[str, Any]:
        """JSON for MLflow: the outcome, each problem, and the contract it was checked against."""
        contract = None
        if self.suite is not None:
            contract = {
                "path": self.contract_path,
                "drafted": self.drafted,
                "sha256": contract_digest(self.suite),
                "suite": self.suite,
            }
        return {
            "success": self.success,
            "message": self.message(),
            "source": self.source,
            "rows": self.rows,
            "columns": self.columns,
            "expectations_checked": self.expectations,
            "seconds": round(self.seconds, 3),
            "failures": [f.to_dict() for f in self.failures],
            "warnings": [f.to_dict() for f in self.warnings],
            "contract": contract,
        }

    def markdown(self) -> str:
        """A summary for the Prefect run artifact."""
        verdict = "passed" if self.success else "**refused**"
        drafted = " (drafted by this run: review it)" if self.drafted else ""
        lines = [
            f"# Data validation: {verdict}",
            "",
            self.message(),
            "",
            f"`{display_path(self.source)}`: {self.rows} rows x {self.columns} columns, "
            f"{self.expectations} checks in {self.seconds:.2f} s against "
            f"`{self.contract_path or 'the contract'}`{drafted}",
        ]
        problems = [*self.failures, *self.warnings]
        if problems:
            lines += [
                "",
                "| level | column | check | problem | rows |",
                "| --- | --- | --- | --- | --- |",
            ]
            for item in problems:
                problem = item.detail.replace("|", "\\|")
                count = "" if item.unexpected_count is None else str(item.unexpected_count)
                column = item.column or "-"
                lines.append(
                    f"| {item.on_violation} | {column} | {item.expectation} | {problem} | {count} |"
                )
        return "\n".join(lines) + "\n"


def check(report: ValidationReport) -> None:
    """Raise DataError when a fail-level check failed; warn-level problems are only logged."""
    for item in report.warnings:
        logger.warning("data contract warning: %s", item.text(report.source))
    if not report.success:
        raise DataError(report.message(), report=report.to_dict())


# --- running GX -----------------------------------------------------------------------------


def _gx_suite(expectations: list[dict[str, Any]]) -> Any:
    """A GX ExpectationSuite; an expectation GX cannot build is a spec error, never skipped.

    (GX's own constructor logs and drops an invalid expectation: a typo would pass silently.)
    """
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    for index, item in enumerate(expectations):
        meta = {**item.get("meta", {}), "conveyor_index": index}
        try:
            configuration = ExpectationConfiguration(
                type=item["type"], kwargs=item.get("kwargs", {}), meta=meta
            )
            built.append(configuration.to_domain_obj())
        except Exception as exc:  # GX raises its own error types, and pydantic's for bad kwargs
            column = item.get("kwargs", {}).get("column")
            about = f" on column {column!r}" if column else ""
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise SpecError(f"expectation {item['type']}{about}: {reason}") from None
    # Built objects go in whole: `add_expectation` searches the suite for duplicates each time.
    return ExpectationSuite(name="conveyor", expectations=built)


def _gx_validator(frame: pd.DataFrame) -> Any:
    """A GX validator on the frame, in a fresh in-memory context: no files, docs or progress bars.

    One validator serves both passes: `Batch.validate` builds a new one per call, and each
    build hashes the whole frame again for the batch id (0.3 s at 1M x 20).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )
    from great_expectations.validator.v1_validator import Validator

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("conveyor").add_dataframe_asset("frame")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    return Validator(batch_definition=batch_definition, batch_parameters={"dataframe": frame})


def _run_gx(
    validator: Any, expectations: list[dict[str, Any]], result_format: Any
) -> dict[int, Any]:
    """Validate; results keyed by the expectation's position in `expectations`."""
    if not expectations:
        return {}
    validator.result_format = result_format
    outcome = validator.validate_expectation_suite(_gx_suite(expectations))
    return {int(r.expectation_config.meta["conveyor_index"]): r for r in outcome.results}


def _exception(result: Any) -> str | None:
    info = result.exception_info or {}
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _fast_path(item: dict[str, Any]) -> bool:
    kwargs = item.get("kwargs", {})
    return (
        item["type"] == DUPLICATES
        and kwargs.get("ignore_row_if", "never") == "never"
        and not kwargs.get("row_condition")
    )


def _fast_duplicates(frame: pd.DataFrame, kwargs: dict[str, Any]) -> tuple[bool, int, int]:
    """GX's compound-uniqueness check on row hashes: (passed, rows with a twin, repeated rows).

    GX runs DataFrame.duplicated over every column (1.9 s at 1M x 20); hashing each row to
    64 bits first gives the same answer (a false duplicate needs a hash collision, ~1e-8 at
    1M rows) in an eighth of the time. A unit test holds it to GX's own result.
    """
    columns = [c for c in kwargs["column_list"] if c in frame.columns]
    if not columns or frame.empty:
        return True, 0, 0
    hashes = pd.util.hash_pandas_object(frame[columns], index=False)
    involved = int(hashes.duplicated(keep=False).sum())
    repeats = int(hashes.duplicated(keep="first").sum())
    allowed = (1 - kwargs.get("mostly", 1.0)) * len(frame)
    return involved <= allowed + 1e-9, involved, repeats


def _gx_results(
    frame: pd.DataFrame, expectations: list[dict[str, Any]]
) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, str]]:
    """(failed expectations with their SUMMARY results, expectations that raised) by position.

    The first pass asks GX for BOOLEAN_ONLY results (no unexpected lists to build); only the
    expectations that failed run again with SUMMARY results, for examples and row numbers.
    """
    via_gx = [i for i, item in enumerate(expectations) if not _fast_path(item)]
    validator = _gx_validator(frame)
    first = _run_gx(validator, [expectations[i] for i in via_gx], "BOOLEAN_ONLY")
    broken = [via_gx[k] for k, result in sorted(first.items()) if not result.success]
    failed: list[tuple[int, dict[str, Any]]] = []
    errors: dict[int, str] = {}
    summary = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
    for k, result in sorted(_run_gx(validator, [expectations[i] for i in broken], summary).items()):
        if (raised := _exception(result)) is not None:
            errors[broken[k]] = raised
        elif not result.success:
            failed.append((broken[k], dict(result.result or {})))
    for index, item in enumerate(expectations):
        if _fast_path(item):
            passed, involved, repeats = _fast_duplicates(frame, item["kwargs"])
            if not passed:
                failed.append((index, {"unexpected_count": involved, "repeats": repeats}))
    return failed, errors


# --- describing failures --------------------------------------------------------------------


def _non_numbers(series: pd.Series) -> list[Any]:
    present = series.dropna()
    parsed = pd.to_numeric(present, errors="coerce")
    return _distinct(present[parsed.isna()].head(100).tolist())


def _column_set_problem(expected: list[str], frame: pd.DataFrame) -> tuple[str, str | None]:
    missing = [c for c in expected if c not in frame.columns]
    extra = [str(c) for c in frame.columns if c not in expected]
    column = next(iter(missing + extra), None)
    if len(missing) == 1 and len(extra) == 1:
        return (
            f"column {missing[0]!r} is missing and column {extra[0]!r} is not in the contract "
            "(renamed?)",
            column,
        )
    parts = []
    if missing:
        parts.append(f"column{'s' * (len(missing) > 1)} {_names(missing)} missing")
    if extra:
        parts.append(
            f"unexpected column{'s' * (len(extra) > 1)} {_names(extra)} (not in the contract)"
        )
    return "; ".join(parts) or "the columns differ from the contract", column


_FAMILY_WORDS = {"number": "numbers", "text": "text", "boolean": "booleans", "datetime": "dates"}


def _describe(
    item: dict[str, Any], result: dict[str, Any], frame: pd.DataFrame, target: str
) -> Failure:
    """A failed expectation in words a user can act on."""
    kind, kwargs = item["type"], item.get("kwargs", {})
    column = kwargs.get("column")
    level = item.get("meta", {}).get("on_violation", FAIL)
    count = result.get("unexpected_count")
    examples = _distinct(result.get("partial_unexpected_list") or [])
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
        again = (
            f"{result['repeats']} rows repeat another row exactly; " if "repeats" in result else ""
        )
        return failure(
            f"{again}{count} rows ({share:.1f}%) have an identical twin, the contract allows at "
            f"most {allowed:g}% (contract.max_duplicate_fraction)",
            table_level=True,
        )
    if kind in TYPE_CHECKS:
        family = item.get("meta", {}).get("family") or kwargs.get("type_") or "another type"
        observed = frame[column].dtype if column in frame.columns else result.get("observed_value")
        if family == "number" and column in frame.columns:
            examples = _non_numbers(frame[column])
        expected = _FAMILY_WORDS.get(family, family)
        return failure(f"holds {observed} values, the contract expects {expected}{_eg(examples)}")
    if kind == NOT_NULL:
        role = " (target)" if column == target else ""
        if kwargs.get("mostly") is not None:
            share = 100 * (count or 0) / max(len(frame), 1)
            allowed = 100 * (1 - kwargs["mostly"])
            return failure(
                f"{_count(count, 'missing value')}{role} ({share:.1f}%), the contract allows at "
                f"most {allowed:.1f}%",
                examples=[],
            )
        where = f" (e.g. rows {', '.join(map(str, rows))})" if rows else ""
        return failure(
            f"{_count(count, 'missing value')}{role}, the contract allows none{where}", examples=[]
        )
    if kind == BETWEEN:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        low_text = "-inf" if low is None else _show(low)
        high_text = "inf" if high is None else _show(high)
        return failure(f"{_count(count, 'value')} outside [{low_text}, {high_text}]{_eg(examples)}")
    if kind == IN_SET:
        allowed_values = kwargs.get("value_set", [])
        listed = ", ".join(_show(v) for v in allowed_values[:6])
        listed += ", ..." if len(allowed_values) > 6 else ""
        what = "the target's classes" if column == target else "the contract's categories"
        return failure(f"{_count(count, 'value')} not in {what} [{listed}]{_eg(examples)}")
    details = [f"{kind} failed"]
    if (observed := result.get("observed_value")) is not None:
        details.append(f"observed {_show(observed)}")
    if count is not None:
        details.append(f"{_count(count, 'unexpected value')}{_eg(examples)}")
    return failure(", ".join(details))


# --- Conveyor's own checks ------------------------------------------------------------------


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
                f"{_count(count, 'missing target value')} (e.g. rows {', '.join(map(str, rows))}): "
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
                f"{what} {_show(classes[0])} in {len(present)} rows: a model needs at least two "
                "target values to learn from",
                len(present), [_python(classes[0])],
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
        examples = _distinct(values[positions[:100]].tolist())
        labels = [features.index[i] for i in positions[:EXAMPLES]]
        count = int(infinite.sum())
        problems.append(
            Failure(
                FINITE, str(column), FAIL,
                f"{_count(count, 'infinite value')}{_eg(examples)}: models cannot use them",
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


def _conveyor_checks(
    frame: pd.DataFrame, spec: PipelineSpec, task_type: str | None
) -> list[Failure]:
    """The checks GX cannot express well: target sanity, infinities, label leakage."""
    target = spec.data.target
    features = feature_frame(spec, frame)
    problems = _infinity_problems(features)
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


# --- validation -----------------------------------------------------------------------------


def _is_cause(problem: Failure, missing: set[str], mistyped: set[str | None]) -> bool:
    if problem.expectation == COLUMN_SET:
        return True
    if problem.column in missing:
        return False
    return problem.column not in mistyped or problem.expectation in TYPE_CHECKS


def validate_frame(
    frame: pd.DataFrame,
    suite: dict[str, Any],
    spec: PipelineSpec,
    source: str,
    locate: Callable[[int], str] | None = None,
) -> ValidationReport:
    """Run the contract in an ephemeral GX context, plus Conveyor's own checks, and report.

    `locate` maps a row position to the file it came from, when the frame joins several files.
    """
    started = time.perf_counter()
    target = spec.data.target
    task_type = spec.task
    if task_type is None and target in frame.columns:
        task_type = infer_task(frame[target])
    expectations = list(suite["expectations"])
    failed, errors = _gx_results(frame, expectations)

    expected_columns = {
        c
        for e in expectations
        if e["type"] == COLUMN_SET
        for c in e["kwargs"].get("column_set", [])
    }
    missing = expected_columns - set(frame.columns) if expected_columns else set()
    problems = [_describe(expectations[i], result, frame, target) for i, result in failed]
    # A missing column fails every check on it, a mistyped one its range and set checks: say the
    # cause once (GX reports those as raised exceptions or failures of their own).
    mistyped = {p.column for p in problems if p.expectation in TYPE_CHECKS}
    problems = [p for p in problems if _is_cause(p, missing, mistyped)]
    for index, raised in errors.items():
        item = expectations[index]
        column = item.get("kwargs", {}).get("column")
        if column not in missing and column not in mistyped:
            level = item.get("meta", {}).get("on_violation", FAIL)
            reason = raised.splitlines()[0] if raised else "error"
            problems.append(Failure(item["type"], column, level, f"could not run: {reason}"))
    if not any(p.expectation == COLUMN_SET and p.on_violation == FAIL for p in problems):
        checked = frame.drop(columns=[c for c in mistyped if c], errors="ignore")
        told = {p.column for p in problems if p.expectation == NOT_NULL}
        problems += [
            p for p in _conveyor_checks(checked, spec, task_type)
            if not (p.expectation == TARGET_NOT_NULL and p.column in told)
        ]  # fmt: skip
    for problem in problems:
        if problem.file is None and problem.rows and locate is not None:
            problem.file = locate(problem.rows[0])

    def rank(problem: Failure) -> int:
        if problem.column == target and problem.expectation in {NOT_NULL, IN_SET, BETWEEN}:
            return _PRIORITY[TARGET_NOT_NULL]  # no label, no training: say it before the features
        return _PRIORITY.get(problem.expectation, 9)

    problems.sort(key=rank)
    failures = [p for p in problems if p.on_violation == FAIL]
    return ValidationReport(
        source=source,
        success=not failures,
        failures=failures,
        warnings=[p for p in problems if p.on_violation != FAIL],
        rows=len(frame),
        columns=frame.shape[1],
        expectations=len(expectations) + CONVEYOR_CHECKS,
        seconds=time.perf_counter() - started,
        suite=suite,
    )


# --- Prefect task and the CLI entry ---------------------------------------------------------


def _source(dataset: Dataset) -> str:
    if len(dataset.files) == 1:
        return dataset.files[0]
    return dataset.source or ",".join(dataset.files)


def _locate(dataset: Dataset) -> Callable[[int], str] | None:
    return dataset.file_of_row if len(dataset.files) > 1 else None


def validate_dataset(spec: PipelineSpec, dataset: Dataset) -> ValidationReport:
    """Validate a loaded dataset against the spec's contract (drafting it on first use)."""
    suite, drafted = ensure_contract(spec, dataset.frame)
    try:
        report = validate_frame(dataset.frame, suite, spec, _source(dataset), _locate(dataset))
    except SpecError as exc:
        raise SpecError(f"{display_path(str(spec.contract_path))}: {exc}") from None
    report.contract_path = display_path(str(spec.contract_path))
    report.drafted = drafted
    if drafted and not report.success:
        # A contract drafted from data that is refused anyway would enshrine that data: drop it.
        spec.contract_path.unlink(missing_ok=True)
    return report


def _artifact_key(name: str) -> str:
    return "validation-" + "".join(char if char.isalnum() else "-" for char in name.lower())


# Never cached: a cache key would hash the whole frame, and a skipped validation is no validation.
@task(name="validate_data", cache_policy=NO_CACHE)
def validate_data(spec: PipelineSpec, dataset: Dataset) -> ValidationReport:
    """Check the data against its contract; DataError when broken (no retries: data is data)."""
    from prefect.artifacts import create_markdown_artifact

    log = get_run_logger()
    report = validate_dataset(spec, dataset)
    if report.drafted:
        count = len(report.suite["expectations"]) if report.suite else 0
        if report.success:
            log.warning(
                "%s: drafted a contract of %d checks from this data; review it, commit it",
                report.contract_path,
                count,
            )
        else:  # the refusal itself is the message; the draft is gone
            log.info("%s: the contract drafted from this data was not kept", report.contract_path)
    create_markdown_artifact(
        report.markdown(), key=_artifact_key(spec.name), description=report.message()[:500]
    )
    log.info("%s (%.2f s)", report.message(), report.seconds)
    check(report)
    return report


def init_contract(spec_path: str, force: bool = False) -> Path:
    """Draft the spec's contract from its current data (`conveyor contract init SPEC`)."""
    spec = find_spec(spec_path)
    path = spec.contract_path
    if path.exists() and not force:
        raise SpecError(
            f"{display_path(str(path))}: a contract already exists; "
            "edit it, or pass --force to draft it again"
        )
    dataset = load_dataset(spec.resolve_path(spec.data.path), spec.data.max_file_mb)
    if spec.data.target not in dataset.frame.columns:
        columns = _names([str(c) for c in dataset.frame.columns], 10)
        raise DataError(
            f"{display_path(_source(dataset))}: target column {spec.data.target!r} is not in the "
            f"data (columns: {columns})"
        )
    suite = draft_contract(spec, dataset.frame)
    # A contract is drafted from data Conveyor would accept, or not at all.
    check(validate_frame(dataset.frame, suite, spec, _source(dataset), _locate(dataset)))
    return save_contract(suite, path)
