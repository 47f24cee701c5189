"""Validating a frame against its contract (GX, then Conveyor's own checks), and drafting one for the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from conveyor.errors import DataError, SpecError
from conveyor.spec import PipelineSpec, find_spec
from tasks.contracts.checks import own_check_names, own_checks
from tasks.contracts.describe import describe_failure
from tasks.contracts.draft import draft_contract
from tasks.contracts.expectations import (
    BETWEEN,
    COLUMN_SET,
    FAIL,
    IN_SET,
    NOT_NULL,
    PRIORITY,
    TARGET_NOT_NULL,
    TYPE_CHECKS,
)
from tasks.contracts.gx_runner import gx_results
from tasks.contracts.report import Failure, ValidationReport, check, quoted_names
from tasks.contracts.store import ensure_contract, save_contract
from tasks.data import Dataset, display_path, infer_task, load_dataset


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
    failed, errors = gx_results(frame, expectations)

    expected_columns = {c for e in expectations if e["type"] == COLUMN_SET for c in e["kwargs"].get("column_set", [])}
    missing = expected_columns - set(frame.columns) if expected_columns else set()
    problems = [describe_failure(expectations[i], result, frame, target) for i, result in failed]
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
    own = 0
    if not any(p.expectation == COLUMN_SET and p.on_violation == FAIL for p in problems):
        checked = frame.drop(columns=[c for c in mistyped if c], errors="ignore")
        own = len(own_check_names(spec, checked))
        told = {p.column for p in problems if p.expectation == NOT_NULL}
        problems += [
            p for p in own_checks(checked, spec, task_type)
            if not (p.expectation == TARGET_NOT_NULL and p.column in told)
        ]  # fmt: skip
    for problem in problems:
        if problem.file is None and problem.rows and locate is not None:
            problem.file = locate(problem.rows[0])

    def rank(problem: Failure) -> int:
        if problem.column == target and problem.expectation in {NOT_NULL, IN_SET, BETWEEN}:
            return PRIORITY[TARGET_NOT_NULL]  # no label, no training: say it before the features
        return PRIORITY.get(problem.expectation, 9)

    problems.sort(key=rank)
    failures = [p for p in problems if p.on_violation == FAIL]
    return ValidationReport(
        source=source,
        success=not failures,
        failures=failures,
        warnings=[p for p in problems if p.on_violation != FAIL],
        rows=len(frame),
        columns=frame.shape[1],
        expectations=len(expectations) + own,
        seconds=time.perf_counter() - started,
        suite=suite,
        own_checks=own,
    )


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


def init_contract(spec_path: str, force: bool = False) -> Path:
    """Draft the spec's contract from its current data (`conveyor contract init SPEC`)."""
    spec = find_spec(spec_path)
    path = spec.contract_path
    if path.exists() and not force:
        raise SpecError(
            f"{display_path(str(path))}: a contract already exists; edit it, or pass --force to draft it again"
        )
    dataset = load_dataset(spec.resolve_path(spec.data.path), spec.data.max_file_mb)
    if spec.data.target not in dataset.frame.columns:
        columns = quoted_names([str(c) for c in dataset.frame.columns], 10)
        raise DataError(
            f"{display_path(_source(dataset))}: target column {spec.data.target!r} is not in the "
            f"data (columns: {columns})"
        )
    suite = draft_contract(spec, dataset.frame)
    # A contract is drafted from data Conveyor would accept, or not at all.
    check(validate_frame(dataset.frame, suite, spec, _source(dataset), _locate(dataset)))
    return save_contract(suite, path)
