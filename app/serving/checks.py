"""The serving contract's fail-level row checks on a request, in a few numpy and set operations.

Batch scoring's `ChunkChecks` runs two to six Arrow kernels per check: for a one-row request of
20 columns that is about 150 kernel calls, most of a millisecond, more than the rest of the
request's own work. Here the same checks are compiled once per column layout: the float columns
stacked into one matrix (infinity, null and range checks), the text columns' nulls counted and
their values compared with each category set. These only decide that a request passes: one that
may break a check goes through `ChunkChecks` itself, so a refusal carries batch scoring's exact
message, and a check this does not cover (another column type, a bound that is not a plain
number) runs through `ChunkChecks` on every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.contracts.expectations import BETWEEN, IN_SET, NOT_NULL
from tasks.scoring import ChunkChecks

FLOAT, TEXT = pa.float64(), pa.string()
_EXACT_INT = 2**53  # Arrow compares a float column with an int bound only within this range
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _plain_bound(value: Any) -> bool:
    if value is None or isinstance(value, float):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _EXACT_INT


@dataclass(frozen=True)
class _Plan:
    """The checks for one column layout (a request's schema)."""

    matrix: tuple[str, ...]  # float64 columns stacked in this order, the float features first
    infinite: int  # the first `infinite` matrix columns must hold no infinite value
    not_null: np.ndarray  # matrix columns that must hold neither null nor NaN
    ranged: np.ndarray  # matrix columns with a range, one entry per range check
    low: np.ndarray  # lower bounds, NaN where none (or strict)
    low_strict: np.ndarray
    high: np.ndarray
    high_strict: np.ndarray
    nulls: tuple[str, ...]  # columns of other types that must hold no null
    categories: tuple[tuple[str, frozenset[Any]], ...]
    rest: ChunkChecks | None  # checks run as batch scoring runs them

    def passes(self, table: pa.Table) -> bool:
        if self.matrix:
            values = np.column_stack([table.column(name).to_numpy() for name in self.matrix])
            if self.infinite and np.isinf(values[:, : self.infinite]).any():
                return False
            if self.not_null.size and np.isnan(values[:, self.not_null]).any():
                return False
            if self.ranged.size:
                ranged = values[:, self.ranged]
                with np.errstate(invalid="ignore"):
                    if (
                        (ranged < self.low).any()
                        or (ranged <= self.low_strict).any()
                        or (ranged > self.high).any()
                        or (ranged >= self.high_strict).any()
                    ):
                        return False
        if any(table.column(name).null_count for name in self.nulls):
            return False
        for name, allowed in self.categories:
            found = set(table.column(name).to_pylist())
            found.discard(None)
            if not found <= allowed:
                return False
        if self.rest is not None:
            try:
                self.rest(table, 0)
            except Exception:  # the full checks below raise what batch scoring raises
                return False
        return True


class RowChecks:
    """`ChunkChecks` on one request at a time, with the same refusals, in far fewer operations."""

    def __init__(self, suite: dict[str, Any] | None, source: str, float_features: Iterable[str]) -> None:
        self.full = ChunkChecks(suite, source, float_features)
        self.source = source
        # Checks that allow a share (`mostly`) never refuse a single chunk: only the strict ones here.
        self.strict = [rule for rule in self.full.checks if rule.mostly is None]
        self._plans: dict[pa.Schema, _Plan | None] = {}

    def __call__(self, table: pa.Table) -> None:
        """Raise batch scoring's DataError when a strict check fails on the table's rows."""
        try:
            plan = self._plans[table.schema]
        except KeyError:
            plan = self._plan(table.schema)
            if len(self._plans) < 64:
                self._plans[table.schema] = plan
        if plan is None or not plan.passes(table):
            self.full(table, 0)

    def _plan(self, schema: pa.Schema) -> _Plan | None:
        """The compiled checks for tables of this schema; None where only `ChunkChecks` will do."""
        types = {field.name: field.type for field in schema}
        floats = list(self.full.float_features)
        if any(types.get(name) != FLOAT for name in floats):
            return None  # the infinity check on another type (or a missing column): as batch does
        matrix = {name: index for index, name in enumerate(floats)}
        not_null: list[int] = []
        ranged: list[int] = []
        bounds: list[tuple[float, float, float, float]] = []
        nulls: list[str] = []
        categories: list[tuple[str, frozenset[Any]]] = []
        rest: list[dict[str, Any]] = []
        for rule in self.strict:
            kind, column, kwargs = rule.kind, rule.column, rule.kwargs
            if column not in types:
                continue  # ChunkChecks skips it too
            found = types[column]
            if found == FLOAT and kind in (NOT_NULL, BETWEEN):
                index = matrix.setdefault(column, len(matrix))
                if kind == NOT_NULL:
                    not_null.append(index)
                    continue
                low, high = kwargs.get("min_value"), kwargs.get("max_value")
                if low is None and high is None:
                    continue  # no bound: ChunkChecks skips it
                if _plain_bound(low) and _plain_bound(high):
                    lo = np.nan if low is None else float(low)
                    hi = np.nan if high is None else float(high)
                    below, above = bool(kwargs.get("strict_min")), bool(kwargs.get("strict_max"))
                    ranged.append(index)
                    bounds.append((np.nan if below else lo, lo if below else np.nan,
                                   np.nan if above else hi, hi if above else np.nan))  # fmt: skip
                    continue
            elif kind == NOT_NULL and not (pa.types.is_floating(found) or pa.types.is_dictionary(found)):
                nulls.append(column)
                continue
            elif kind == IN_SET and found == TEXT:
                try:
                    allowed = pa.array(kwargs.get("value_set", [])).cast(TEXT)
                except _CAST_ERRORS:
                    continue  # ChunkChecks skips it too
                except Exception:
                    rest.append({"type": kind, "kwargs": kwargs})
                    continue
                categories.append((column, frozenset(v for v in allowed.to_pylist() if v is not None)))
                continue
            rest.append({"type": kind, "kwargs": kwargs})
        low, low_strict, high, high_strict = np.array(bounds, dtype="float64").reshape(-1, 4).T
        return _Plan(
            matrix=tuple(matrix),
            infinite=len(floats),
            not_null=np.array(not_null, dtype="intp"),
            ranged=np.array(ranged, dtype="intp"),
            low=low,
            low_strict=low_strict,
            high=high,
            high_strict=high_strict,
            nulls=tuple(nulls),
            categories=tuple(categories),
            rest=ChunkChecks({"expectations": rest}, self.source) if rest else None,
        )
