"""The serving contract: the training contract without the target, checked on every input.

How a large input is validated (GX on 10M rows at once would need the whole frame in memory):
- the column set is checked from the file's schema before any row is read, strict about
  missing and extra columns (the pyfunc signature check ignores extras);
- Great Expectations runs the whole serving contract on the first `GX_SAMPLE_ROWS` rows
  (types, nulls, ranges, categories), with its full report on a refusal;
- every chunk then passes cheap Arrow checks of the contract's fail-level null, range and
  category expectations, and of infinite values. A file has one schema, so types cannot change
  between chunks. Expectations only GX can evaluate (custom types, row conditions) see the sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conveyor.errors import DataError
from conveyor.spec import PipelineSpec
from tasks.contracts import (
    BETWEEN,
    COLUMN_SET,
    FAIL,
    IN_SET,
    NOT_NULL,
    ValidationReport,
    apply_overrides,
    check,
    load_contract,
    serving_contract,
    validate_frame,
)
from tasks.data import display_path
from tasks.scoring.arrow_io import ScoringInput, read_chunks
from tasks.scoring.model import ROW, ServingModel

GX_SAMPLE_ROWS = 50_000


def serving_suite(spec: PipelineSpec) -> dict[str, Any] | None:
    """The spec's contract without the target (None when the spec has no contract file yet)."""
    path = spec.contract_path
    if not path.exists():
        return None
    suite = apply_overrides(load_contract(path), spec.contract.expectations)
    return serving_contract(suite, spec.data.target)


def _names(columns: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def expected_columns(
    spec: PipelineSpec, model: ServingModel, suite: dict[str, Any] | None
) -> tuple[list[str], list[str], str]:
    """(required, optional, what they come from) for an input to score."""
    for expectation in (suite or {}).get("expectations", []):
        if expectation.get("type") == COLUMN_SET:
            required = [str(c) for c in expectation.get("kwargs", {}).get("column_set", [])]
            return required, [], f"the serving contract {display_path(str(spec.contract_path))}"
    required = [*([spec.data.id_column] if spec.data.id_column else []), *model.features]
    optional = [
        *spec.data.drop,
        *(spec.governance.sensitive_attributes if spec.governance.exclude_sensitive else ()),
        *([spec.data.split.time_column] if spec.data.split.time_column else []),
    ]
    return (
        required,
        optional,
        f"model {model.name} v{model.version}'s input columns (no contract file)",
    )


def check_columns(source: ScoringInput, spec: PipelineSpec, model: ServingModel, suite: dict[str, Any] | None) -> None:
    """Refuse an input with a missing or an extra column, naming it."""
    columns = list(source.columns)
    required, optional, described = expected_columns(spec, model, suite)
    missing = [c for c in required if c not in columns]
    missing += [c for c in model.features if c not in columns and c not in missing]
    extra = [c for c in columns if c not in required and c not in optional]
    if len(missing) == 1 and len(extra) == 1:
        raise DataError(
            f"{source.shown}: column {missing[0]!r} is missing and column {extra[0]!r} is not in {described} (renamed?)"
        )
    problems = []
    if missing:
        problems.append(f"column{'s' * (len(missing) > 1)} {_names(missing)} missing")
    if extra:
        problems.append(f"unexpected column{'s' * (len(extra) > 1)} {_names(extra)}")
    if problems:
        raise DataError(f"{source.shown}: {'; '.join(problems)} (the input must hold exactly {described})")
    outputs = set(model.output_columns) | ({ROW} if not spec.data.id_column else set())
    clashes = [c for c in columns if c in outputs]
    if clashes:
        raise DataError(f"{source.shown}: column {clashes[0]!r} clashes with an output column of that name")


@dataclass
class _Check:
    kind: str
    column: str
    kwargs: dict[str, Any]
    mostly: float | None
    unexpected: int = 0
    seen: int = 0


class ChunkChecks:
    """The serving contract's fail-level null, range and category checks, per chunk, in Arrow.

    A strict check refuses the input at the first chunk that breaks it; one with `mostly` sums
    its counts over the whole input and is judged in `finish()`.
    """

    def __init__(self, suite: dict[str, Any] | None, source: str, float_features: Iterable[str] = ()) -> None:
        self.source = source
        self.float_features = tuple(float_features)
        self.checks: list[_Check] = []
        for expectation in (suite or {}).get("expectations", []):
            kind, kwargs = expectation.get("type"), dict(expectation.get("kwargs", {}))
            on_violation = expectation.get("meta", {}).get("on_violation", FAIL)
            if kind not in {NOT_NULL, BETWEEN, IN_SET} or on_violation != FAIL or kwargs.get("row_condition"):
                continue
            self.checks.append(_Check(kind, str(kwargs["column"]), kwargs, kwargs.get("mostly")))

    def _unexpected(self, rule: _Check, column: pa.ChunkedArray) -> pa.ChunkedArray | None:
        """A boolean mask of the values that break the check (None when it cannot run in Arrow)."""
        if rule.kind == NOT_NULL:
            return pc.is_null(column, nan_is_null=True)
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if rule.kind == BETWEEN:
            if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
                return None
            low, high = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
            masks = []
            if low is not None:
                below = pc.less_equal if rule.kwargs.get("strict_min") else pc.less
                masks.append(below(column, low))
            if high is not None:
                above = pc.greater_equal if rule.kwargs.get("strict_max") else pc.greater
                masks.append(above(column, high))
            if not masks:
                return None
            return masks[0] if len(masks) == 1 else pc.or_(masks[0], masks[1])
        try:
            allowed = pa.array(rule.kwargs.get("value_set", [])).cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None  # a type the sample's GX type check refused already
        return pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, value_set=allowed)))

    def _describe(self, rule: _Check, count: int, examples: list[Any]) -> str:
        shown = ", ".join(
            repr(v) if isinstance(v, str) else f"{v:g}" if isinstance(v, float) else str(v) for v in examples
        )
        eg = f" (e.g. {shown})" if shown else ""
        if rule.kind == NOT_NULL:
            return f"{count} missing value{'s' * (count != 1)}"
        if rule.kind == BETWEEN:
            low, high = rule.kwargs.get("min_value"), rule.kwargs.get("max_value")
            floor = "-inf" if low is None else f"{low:g}"
            ceiling = "inf" if high is None else f"{high:g}"
            return f"{count} value{'s' * (count != 1)} outside [{floor}, {ceiling}]{eg}"
        return f"{count} value{'s' * (count != 1)} not in the contract's categories{eg}"

    def __call__(self, chunk: pa.Table, offset: int) -> None:
        """Refuse the chunk (rows offset.. of the input) when a strict check fails."""
        where = f"in rows {offset}-{offset + chunk.num_rows - 1}"
        for name in self.float_features:
            column = chunk[name]
            if pa.types.is_floating(column.type):
                infinite = int(pc.sum(pc.is_inf(column)).as_py() or 0)
                if infinite:
                    raise DataError(
                        f"{self.source}: column {name!r}: {infinite} infinite values {where}: models cannot use them"
                    )
        for rule in self.checks:
            if rule.column not in chunk.column_names:
                continue
            column = chunk[rule.column]
            mask = self._unexpected(rule, column)
            if mask is None:
                continue
            count = int(pc.sum(mask).as_py() or 0)
            rule.unexpected += count
            rule.seen += chunk.num_rows if rule.kind == NOT_NULL else chunk.num_rows - column.null_count
            if count and rule.mostly is None:
                examples = [] if rule.kind == NOT_NULL else column.filter(mask).slice(0, 3).to_pylist()
                problem = self._describe(rule, count, examples)
                raise DataError(
                    f"{self.source}: column {rule.column!r}: {problem} {where}; the serving contract refuses them"
                )

    def finish(self) -> None:
        """Judge the checks that allow a share of unexpected values, over the whole input."""
        for rule in self.checks:
            if rule.mostly is None or rule.seen == 0:
                continue
            share = rule.unexpected / rule.seen
            if share > 1 - rule.mostly + 1e-12:
                problem = self._describe(rule, rule.unexpected, [])
                allowed = 100 * (1 - rule.mostly)
                raise DataError(
                    f"{self.source}: column {rule.column!r}: {problem} ({100 * share:.1f}%), "
                    f"the contract allows at most {allowed:.1f}%"
                )


def check_input(
    spec: PipelineSpec, model: ServingModel, source: ScoringInput, suite: dict[str, Any] | None
) -> ValidationReport | None:
    """Columns from the schema, then GX on the first rows (None when there is no contract)."""
    check_columns(source, spec, model, suite)
    if suite is None:
        return None
    sample = next(read_chunks(source, GX_SAMPLE_ROWS), None)
    if sample is None:
        raise DataError(f"{source.shown}: a header but no data rows")
    report = validate_frame(sample.to_pandas(), suite, spec, source.path)
    report.contract_path = display_path(str(spec.contract_path))
    check(report)
    return report
