"""The serving app's pure parts: request bodies into typed columns, the contract's row checks, the model cache."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from app.serving.checks import RowChecks
from app.serving.fleet import CHAMPION, Fleet, Loaded, ModelState
from app.serving.payload import (
    Contract,
    RequestError,
    _number,
    _numbers,
    _text,
    _texts,
    csv_table,
    json_columns,
    typed_table,
)
from conveyor.spec import PipelineSpec
from tasks.contracts.expectations import BETWEEN, IN_SET, NOT_NULL
from tasks.scoring import ChunkChecks, ServingModel

MODEL = ServingModel(
    name="churn",
    version="1",
    alias="champion",
    task="binary",
    features=("x1", "colour"),
    categorical=("colour",),
    classes=("no", "yes"),
    model=None,
)


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["x1", "colour"], "data": [[1.5, "red"], [2, "blue"]]}}',
        b'{"dataframe_records": [{"x1": 1.5, "colour": "red"}, {"x1": 2, "colour": "blue"}]}',
        b'{"instances": [{"x1": 1.5, "colour": "red"}, {"x1": 2, "colour": "blue"}]}',
        b'{"inputs": {"x1": [1.5, 2], "colour": ["red", "blue"]}}',
        b'{"inputs": [{"name": "x1", "shape": [2], "datatype": "FP64", "data": [1.5, 2]},'
        b' {"name": "colour", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]}]}',
        b'[{"x1": 1.5, "colour": "red"}, {"x1": 2, "colour": "blue"}]',
    ],
    ids=["split", "records", "instances", "inputs-columns", "v2-tensors", "bare-records"],
)
def test_every_format_gives_the_same_typed_columns(body: bytes) -> None:
    table = typed_table(json_columns(body), MODEL, {})
    assert table.column("x1").type == pa.float64() and table.column("colour").type == pa.string()
    assert table.to_pydict() == {"x1": [1.5, 2.0], "colour": ["red", "blue"]}


def test_one_record_of_single_values_is_one_row() -> None:
    assert json_columns(b'{"inputs": {"x1": 1.5, "colour": "red"}}') == {"x1": [1.5], "colour": ["red"]}


@pytest.mark.parametrize(
    ("columns", "column", "words"),
    [
        ({"x1": ["a"], "colour": ["red"]}, "x1", "expected a number"),
        ({"x1": [True], "colour": ["red"]}, "x1", "expected a number"),
        ({"x1": [1.0], "colour": [3]}, "colour", "expected text"),
        ({"x1": [1.0], "colour": ["red"], "row_id": ["r1"]}, "row_id", "expected a number"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_column(columns: dict[str, list[Any]], column: str, words: str) -> None:
    with pytest.raises(RequestError) as refused:
        typed_table(columns, MODEL, {"row_id": "number"})
    assert refused.value.status == 400 and refused.value.column == column and words in refused.value.message


def test_ids_keep_their_integer_type() -> None:
    table = typed_table({"x1": [1.0], "colour": ["red"], "row_id": [7]}, MODEL, {"row_id": "number"})
    assert table.column("row_id").type == pa.int64()


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"null",
        b"{}",
        b'{"instances": [[1, "red"]]}',
        b'{"dataframe_split": {"columns": ["x1"], "data": [[1, 2]]}}',
    ],
)
def test_malformed_bodies_are_one_400(body: bytes) -> None:
    with pytest.raises(RequestError) as refused:
        json_columns(body)
    assert refused.value.status == 400 and refused.value.message


def test_csv_reads_features_as_the_model_saw_them() -> None:
    table = csv_table(b"x1,colour\n1,red\n2,blue\n", MODEL)
    assert table.column("x1").type == pa.float64() and table.column("colour").to_pylist() == ["red", "blue"]
    with pytest.raises(RequestError) as refused:
        csv_table(b"x1,colour\nabc,red\n", MODEL)
    assert refused.value.column == "x1"


def _loaded(name: str, size_mb: float) -> Loaded:
    spec = PipelineSpec.model_validate({"name": name, "data": {"path": "x.csv", "target": "label"}})
    model = ServingModel(name, "1", "champion", "binary", ("x1",), (), ("no", "yes"), None)
    return Loaded(name, "1", CHAMPION, Contract(spec, model, None), time.time(), size_mb, 0.0)


def test_the_cache_unloads_the_least_recently_used_model_beyond_its_bound() -> None:
    loads: list[str] = []

    def loader(name: str, role: str, version: str | None) -> Loaded:
        loads.append(name)
        return _loaded(name, 40)

    fleet = Fleet(cache_mb=100, loader=loader)
    for name in ("a", "b", "c"):
        fleet.states[name] = ModelState(aliases={CHAMPION: "1"})
    fleet.ensure("a")
    fleet.ensure("b")
    fleet.get("a")  # a is now more recent than b
    fleet.ensure("c")  # 120 MB > 100: b goes
    assert set(fleet.slots) == {"a", "c"}
    fleet.ensure("b")  # loaded again on demand; a is now the oldest
    assert set(fleet.slots) == {"b", "c"} and loads == ["a", "b", "c", "b"]


def test_an_unknown_model_is_404_and_one_without_champion_too() -> None:
    fleet = Fleet(loader=lambda *_: pytest.fail("nothing to load"))
    fleet.states["new"] = ModelState(aliases={})
    for name in ("nope", "new"):
        with pytest.raises(RequestError) as refused:
            fleet.ensure(name)
        assert refused.value.status == 404 and name in refused.value.message


def _suite() -> dict[str, Any]:
    """Every kind of fail-level check `ChunkChecks` runs, on every column type a request brings."""
    expectations: list[dict[str, Any]] = [
        {"type": NOT_NULL, "kwargs": {"column": "x1"}},
        {"type": BETWEEN, "kwargs": {"column": "x1", "min_value": -1, "max_value": 1.5}},
        {"type": BETWEEN, "kwargs": {"column": "x2", "min_value": 0.0, "strict_min": True}},
        {"type": BETWEEN, "kwargs": {"column": "x2", "max_value": 10, "strict_max": True}},
        {"type": BETWEEN, "kwargs": {"column": "x2", "min_value": None, "max_value": None}},
        {"type": IN_SET, "kwargs": {"column": "x2", "value_set": [0.0, 0.5, 2.0, 9.5, 10]}},
        {"type": NOT_NULL, "kwargs": {"column": "colour"}},
        {"type": IN_SET, "kwargs": {"column": "colour", "value_set": ["red", "blue", None]}},
        {"type": IN_SET, "kwargs": {"column": "colour", "value_set": [1, "red"]}},  # skipped: mixed types
        {"type": BETWEEN, "kwargs": {"column": "colour", "min_value": 0}},  # skipped: not numbers
        {"type": BETWEEN, "kwargs": {"column": "row_id", "min_value": 0, "max_value": 100}},
        {"type": NOT_NULL, "kwargs": {"column": "row_id"}},
        {"type": NOT_NULL, "kwargs": {"column": "score"}},
        {"type": BETWEEN, "kwargs": {"column": "score", "max_value": 1.0}},
        {"type": NOT_NULL, "kwargs": {"column": "absent"}},
        {"type": BETWEEN, "kwargs": {"column": "x1", "min_value": -0.5, "mostly": 0.5}},  # never refuses
        {"type": NOT_NULL, "kwargs": {"column": "x2"}, "meta": {"on_violation": "warn"}},
    ]
    return {"expectations": expectations}


def _request(rng: np.random.Generator, rows: int) -> pa.Table:
    """Mostly good rows; now and then a null, NaN, infinity, bound, value just outside or unknown category."""

    def pick(good: Callable[[], Any], odd: list[Any]) -> list[Any]:
        return [odd[rng.integers(len(odd))] if rng.random() < 0.03 else good() for _ in range(rows)]

    def number(low: float, high: float) -> list[Any]:
        odd = [None, float("nan"), float("inf"), -float("inf"), low, high, low - 0.01, high + 0.01]
        return pick(lambda: float(rng.uniform(low, high)), odd)

    return pa.table(
        {
            "x1": pa.array(number(-1, 1.5), pa.float64(), from_pandas=rng.random() < 0.5),  # NaN as null or NaN
            "x2": pa.array(pick(lambda: [0.5, 2.0, 9.5][rng.integers(3)], [None, 0.0, 10.0, 4.0]), pa.float64()),
            "colour": pa.array(pick(lambda: ["red", "blue"][rng.integers(2)], [None, "green", "1"]), pa.string()),
            "row_id": pa.array(pick(lambda: int(rng.integers(0, 101)), [None, -1, 101]), pa.int64()),
            "score": pa.array(number(0, 1), pa.float64()),
        }
    )


def _outcome(check: Callable[[], None]) -> str | None:
    try:
        check()
    except Exception as exc:  # a refusal (DataError), or what Arrow raises on a bound it cannot compare
        return f"{type(exc).__name__}: {exc}"
    return None


def test_the_fast_row_checks_refuse_exactly_what_batch_scoring_refuses_with_its_message() -> None:
    rng = np.random.default_rng(7)
    fast = RowChecks(_suite(), "request", ["x1", "x2"])
    batch = ChunkChecks(_suite(), "request", ["x1", "x2"])
    outcomes = Counter()
    for index in range(600):
        table = _request(rng, rows=1 + index % 7 if index % 50 else 100)
        expected = _outcome(lambda: batch(table, 0))  # noqa: B023
        assert _outcome(lambda: fast(table)) == expected  # noqa: B023
        outcomes[re.sub(r": .*column ('[^']+').*", r" \1", expected) if expected else "passed"] += 1
    # The requests above reach every check, and some pass.
    assert set(outcomes) == {
        "passed", "DataError 'x1'", "DataError 'x2'", "DataError 'colour'", "DataError 'row_id'",
        "DataError 'score'",
    }, outcomes  # fmt: skip


def test_the_fast_row_checks_leave_what_they_do_not_cover_to_batch_scoring() -> None:
    fast = RowChecks(_suite(), "request", ["x1", "x2"])
    batch = ChunkChecks(_suite(), "request", ["x1", "x2"])
    for x1 in (0.5, float("inf"), 2.0):  # float32, not float64: the whole layout is left to batch scoring
        table = pa.table({"x1": pa.array([x1], pa.float32()), "x2": [2.0], "colour": ["red"]})
        assert _outcome(lambda: fast(table)) == _outcome(lambda: batch(table, 0))  # noqa: B023
    assert _outcome(lambda: fast(table)) is not None
    # A bound Arrow cannot compare exactly with floats fails as it fails in batch scoring.
    suite = {"expectations": [{"type": BETWEEN, "kwargs": {"column": "x1", "min_value": 2**60}}]}
    table = pa.table({"x1": [0.5]})
    expected = _outcome(lambda: ChunkChecks(suite, "request", ["x1"])(table, 0))
    assert expected is not None and expected.startswith("ArrowInvalid")
    assert _outcome(lambda: RowChecks(suite, "request", ["x1"])(table)) == expected


@pytest.mark.parametrize(
    "values",
    [[1.5, 2, None], [float("nan"), 0.0, -3], [2**60 + 1], [2**70], [-(2**63) - 1], [True], [1.0, False], ["a"], []],
)
def test_numbers_and_texts_are_typed_as_value_by_value(values: list[Any]) -> None:
    """The bulk conversions give what `_number` and `_text` give value by value, refusals included."""
    for bulk, one, kind in ((_numbers, _number, pa.float64()), (_texts, _text, pa.string())):
        expected = _outcome(lambda: pa.array([one(v, "x") for v in values], kind))  # noqa: B023
        try:
            slow = pa.array([one(v, "x") for v in values], kind)  # noqa: B023
        except RequestError:
            slow = None
        assert _outcome(lambda: bulk(values, "x")) == expected  # noqa: B023
        if slow is not None:
            assert bulk(values, "x").equals(slow)  # noqa: B023
