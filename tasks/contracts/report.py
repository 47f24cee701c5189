"""The validation report: each problem found, the one line a refusal prints, JSON and Markdown."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from conveyor.errors import DataError
from tasks.contracts.expectations import EXAMPLES, python_scalar
from tasks.contracts.store import contract_digest
from tasks.data import display_path

logger = logging.getLogger(__name__)


def show(value: Any) -> str:
    if isinstance(value, date):  # datetime and pandas' Timestamp are dates too
        return value.isoformat()
    value = python_scalar(value)
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
    value = python_scalar(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def counted(number: int | None, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def quoted_names(columns: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def distinct_examples(values: Iterable[Any]) -> list[Any]:
    """The first few distinct values, in order (GX lists every unexpected row, repeats included)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(show(value), value)
        if len(seen) == EXAMPLES:
            break
    return list(seen.values())


def for_example(examples: list[Any]) -> str:
    return f" (e.g. {', '.join(show(v) for v in examples)})" if examples else ""


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
    own_checks: int = 0  # of `expectations`, Conveyor's own checks that ran (the rest are the suite's)

    def message(self) -> str:
        if self.failures:
            more = len(self.failures) - 1
            tail = f" (and {counted(more, 'more problem')}: see the validation report)" if more else ""
            return self.failures[0].text(self.source) + tail
        checks = f"{self.rows} rows pass the contract ({self.expectations} checks)"
        passed = f"{display_path(self.source)}: {checks}"
        if self.warnings:
            first = self.warnings[0].text(self.source)
            return f"{passed} with {counted(len(self.warnings), 'warning')}: {first}"
        return passed

    def draft_note(self) -> str | None:
        """What became of a contract drafted by this validation (None when none was drafted)."""
        if not self.drafted:
            return None
        if not self.success:  # the refusal itself is the message; the draft is gone
            return f"{self.contract_path}: the contract drafted from this data was not kept"
        suite = self.expectations - self.own_checks
        return (
            f"{self.contract_path}: drafted a contract of {self.expectations} checks from this data "
            f"({counted(suite, 'expectation')} in the suite, {self.own_checks} of Conveyor's own); "
            "review it, commit it"
        )

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
                lines.append(f"| {item.on_violation} | {column} | {item.expectation} | {problem} | {count} |")
        return "\n".join(lines) + "\n"


def check(report: ValidationReport) -> None:
    """Raise DataError when a fail-level check failed; warn-level problems are only logged."""
    for item in report.warnings:
        logger.warning("data contract warning: %s", item.text(report.source))
    if not report.success:
        raise DataError(report.message(), report=report.to_dict())
