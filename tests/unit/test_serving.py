"""The serving app's pure parts: request bodies into typed columns, and the bounded model cache."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pytest

from app.serving.fleet import CHAMPION, Fleet, Loaded, ModelState
from app.serving.payload import Contract, RequestError, csv_table, json_columns, typed_table
from conveyor.spec import PipelineSpec
from tasks.scoring import ServingModel

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
