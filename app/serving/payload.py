"""A request body into typed Arrow columns, checked by the serving contract batch scoring uses.

Accepted bodies (MLflow's scoring formats, and the Open Inference Protocol's):
- JSON `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`;
- JSON `{"dataframe_records": [{...}, ...]}`;
- JSON `{"instances": ...}` or `{"inputs": ...}`: records, one record, or columns (`{"x": [1, 2]}`);
- JSON `{"inputs": [{"name": "x", "data": [...]}, ...]}` (Open Inference Protocol v2 tensors);
- CSV with a header row (`Content-Type: text/csv`).

Every refusal is a `RequestError`: an HTTP status and one line naming the column and the problem.
The contract itself is `tasks.scoring.contract`: the exact column set (`check_columns`) and the
fail-level null, range, category and infinity checks (`ChunkChecks`), as on every batch chunk
(`app.serving.checks` runs them in fewer operations, with the same refusals).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from app.serving.checks import RowChecks
from conveyor.errors import DataError
from conveyor.spec import PipelineSpec
from tasks.contracts.expectations import TYPE_CHECKS
from tasks.scoring import ScoringInput, ServingModel, check_columns

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_COLUMN = re.compile(r"column '([^']+)'")
SOURCE = "request"


class RequestError(Exception):
    """A request the server refuses: status, message and the column it concerns (if one)."""

    def __init__(self, status: int, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.column = column if column is not None else _column_named(message)

    def body(self) -> dict[str, Any]:
        code = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "REQUEST_TOO_LARGE"}.get(self.status, "ERROR")
        found: dict[str, Any] = {"error_code": code, "message": self.message}
        if self.column is not None:
            found["column"] = self.column
        return found


def _column_named(message: str) -> str | None:
    match = _COLUMN.search(message)
    return match.group(1) if match else None


def bad(message: str, column: str | None = None) -> RequestError:
    return RequestError(400, message, column)


# --- JSON shapes into columns -------------------------------------------------------------------


def _records(rows: Any, where: str) -> dict[str, list[Any]]:
    if not isinstance(rows, list) or not rows:
        raise bad(f"{where}: expected a non-empty list of records")
    columns: dict[str, list[Any]] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad(f"{where}: record {index} is not an object of column: value")
        for name in row:
            if name not in columns:
                columns[name] = [None] * index
        for name, values in columns.items():
            values.append(row.get(name))
    return columns


def _split(split: Any) -> dict[str, list[Any]]:
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise bad('dataframe_split: expected {"columns": [...], "data": [[...], ...]}')
    names, data = split["columns"], split.get("data")
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise bad("dataframe_split: columns must be distinct names")
    if not isinstance(data, list) or not data:
        raise bad("dataframe_split: data must be a non-empty list of rows")
    width = len(names)
    for index, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            raise bad(f"dataframe_split: row {index} does not hold {width} values, one per column")
    return {name: list(values) for name, values in zip(names, zip(*data, strict=True), strict=True)} if width else {}


def _columnar(data: dict[str, Any], where: str) -> dict[str, list[Any]]:
    if not data:
        raise bad(f"{where}: no columns")
    if all(isinstance(value, list) for value in data.values()):
        lengths = {len(value) for value in data.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise bad(f"{where}: every column must hold the same, non-zero number of values")
        return {str(name): value for name, value in data.items()}
    if any(isinstance(value, list | dict) for value in data.values()):
        raise bad(f"{where}: mixes lists and single values; send one record or one list per column")
    return {str(name): [value] for name, value in data.items()}  # one record


def _tensors(inputs: list[Any]) -> dict[str, list[Any]]:
    """Open Inference Protocol v2 `inputs`: one named 1-d tensor per column."""
    columns: dict[str, list[Any]] = {}
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise bad(f"inputs: tensor {index} has no name")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise bad(f"inputs: tensor {tensor['name']!r} has no data list", tensor["name"])
        if data and isinstance(data[0], list):  # shape [n, 1]
            data = [item[0] if isinstance(item, list) and len(item) == 1 else item for item in data]
        columns[tensor["name"]] = data
    return _columnar(columns, "inputs")


def json_columns(body: bytes) -> dict[str, list[Any]]:
    """The columns of a JSON body in any accepted format."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad(f"malformed JSON: {exc}") from None
    if isinstance(document, list):
        return _records(document, "body")
    if not isinstance(document, dict):
        raise bad(f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    given = [key for key in FORMATS if key in document]
    if len(given) != 1:
        what = "more than one of" if given else "none of"
        raise bad(f"the body holds {what} {', '.join(FORMATS)}: send exactly one")
    key = given[0]
    value = document[key]
    if key == "dataframe_split":
        return _split(value)
    if key == "dataframe_records":
        return _records(value, key)
    if isinstance(value, dict):
        return _columnar(value, key)
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        if key == "inputs" and all("name" in item and "data" in item for item in value):
            return _tensors(value)
        return _records(value, key)
    raise bad(f"{key}: expected records or columns by name (a list of lists has no column names)")


# --- typed columns ----------------------------------------------------------------------------


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"column {name!r}: expected a number, got {value!r}"[:300], name)
    return float(value) if not isinstance(value, float) or not math.isnan(value) else None


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise bad(f"column {name!r}: expected text (one of the contract's categories), got {value!r}"[:300], name)


def _id_values(values: list[Any], name: str, family: str | None) -> pa.Array:
    """A column that is not a feature (the id, a dropped or time column): as JSON typed it,
    held to the contract's type family when it declares one."""
    if family == "number":
        if all(value is None or isinstance(value, int) and not isinstance(value, bool) for value in values):
            try:
                return pa.array(values, pa.int64())
            except OverflowError:
                pass
        return pa.array([_number(value, name) for value in values], pa.float64())
    if family == "text":
        return pa.array([_text(value, name) for value in values], pa.string())
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        raise bad(f"column {name!r}: values of mixed or unsupported types", name) from None
    if pa.types.is_struct(array.type) or pa.types.is_list(array.type):
        raise bad(f"column {name!r}: expected single values, got lists or objects", name)
    return array


def typed_table(columns: dict[str, list[Any]], model: ServingModel, families: dict[str, str]) -> pa.Table:
    """Numeric features as float64, categorical ones as text, other columns by the contract's type."""
    arrays = {}
    categorical = set(model.categorical)
    features = set(model.features)
    for name, values in columns.items():
        if name in categorical:
            arrays[name] = _texts(values, name)
        elif name in features:
            arrays[name] = _numbers(values, name)
        else:
            arrays[name] = _id_values(values, name, families.get(name))
    return pa.table(arrays)


_NUMBER_TYPES = {float, int, type(None)}
_TEXT_TYPES = {str, type(None)}


def _numbers(values: list[Any], name: str) -> pa.Array:
    """float64, NaN as null (what `_number` makes of each value, without a Python call per value)."""
    if set(map(type, values)) <= _NUMBER_TYPES:  # bools and text take the slow path, which refuses them
        try:
            return pa.array(values, pa.float64(), from_pandas=True)
        except (pa.ArrowInvalid, OverflowError):  # an integer beyond float precision: as `_number` has it
            pass
    return pa.array([_number(value, name) for value in values], pa.float64())


def _texts(values: list[Any], name: str) -> pa.Array:
    if set(map(type, values)) <= _TEXT_TYPES:
        return pa.array(values, pa.string())
    return pa.array([_text(value, name) for value in values], pa.string())


def csv_table(body: bytes, model: ServingModel) -> pa.Table:
    """A CSV body with a header row, features read as the model saw them."""
    try:
        header = pacsv.open_csv(io.BytesIO(body)).schema.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise bad(f"malformed CSV: {str(exc).splitlines()[0]}") from None
    types = {
        name: pa.string() if name in model.categorical else pa.float64() for name in header if name in model.features
    }
    try:
        table = pacsv.read_csv(io.BytesIO(body), convert_options=pacsv.ConvertOptions(column_types=types))
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).splitlines()[0]
        match = re.search(r"column #(\d+)", first)
        column = header[int(match.group(1))] if match and int(match.group(1)) < len(header) else None
        raise bad(f"malformed CSV: {first}" + (f" (column {column!r})" if column else ""), column) from None
    if table.num_rows == 0:
        raise bad("CSV: a header but no data rows")
    return table


# --- the contract -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """The serving contract of one model version, ready to check requests against."""

    spec: PipelineSpec
    model: ServingModel
    suite: dict[str, Any] | None

    @cached_property
    def families(self) -> dict[str, str]:
        """The type family (number, text, ...) the contract declares per column."""
        found = {}
        for expectation in (self.suite or {}).get("expectations", []):
            family = expectation.get("meta", {}).get("family")
            if expectation.get("type") in TYPE_CHECKS and family:
                found[str(expectation["kwargs"]["column"])] = str(family)
        return found

    @cached_property
    def floats(self) -> list[str]:
        return [name for name in self.model.features if name not in self.model.categorical]

    @cached_property
    def _accepted(self) -> set[tuple[str, ...]]:
        """Column lists that passed already (clients send the same one again and again)."""
        return set()

    @cached_property
    def _checks(self) -> RowChecks:
        return RowChecks(self.suite, SOURCE, self.floats)

    def check_columns(self, names: list[str]) -> None:
        key = tuple(names)
        if key in self._accepted:
            return
        try:
            check_columns(ScoringInput(SOURCE, "json", key), self.spec, self.model, self.suite)
        except DataError as exc:
            raise bad(str(exc)) from None
        if len(self._accepted) < 64:
            self._accepted.add(key)

    def check_rows(self, table: pa.Table) -> None:
        """The fail-level checks; those allowing a share (`mostly`) are left to monitoring, and the
        counts those keep across requests are never judged here."""
        try:
            self._checks(table)
        except DataError as exc:
            raise bad(str(exc)) from None


def read_request(body: bytes, content_type: str, contract: Contract) -> pa.Table:
    """The request's rows as a typed table that passed the serving contract."""
    if not body.strip():
        raise bad("empty body")
    if content_type.startswith("text/csv"):
        table = csv_table(body, contract.model)
        contract.check_columns(table.column_names)
    elif content_type.startswith("application/json") or not content_type:
        columns = json_columns(body)
        contract.check_columns(list(columns))
        table = typed_table(columns, contract.model, contract.families)
    else:
        raise RequestError(415, f"unsupported content type {content_type!r}: use application/json or text/csv")
    contract.check_rows(table)
    return table
