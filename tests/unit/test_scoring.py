"""Chunked scoring, the serving contract, the prediction log and late labels (real GX, sklearn)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from conveyor import predictions
from conveyor.errors import DataError, SpecError
from conveyor.spec import parse_spec
from tasks.contracts import draft_contract, save_contract
from tasks.scoring import (
    ServingModel,
    check_input,
    open_input,
    score_file,
    serving_suite,
)
from tasks.training import fit_pipeline, infer_columns
from tests.factories import classification_frame

FEATURES = ["x1", "x2", "colour"]


def make_spec(folder: Path, id_column: str | None = "row_id"):
    (folder / "pipelines").mkdir(exist_ok=True)
    data = {
        "path": "train.csv",
        "target": "label",
        **({"id_column": id_column} if id_column else {}),
    }
    return parse_spec({"name": "churn", "data": data}, str(folder / "pipelines" / "churn.yaml")).for_task("binary")


@pytest.fixture(scope="module")
def fitted():
    frame = classification_frame(rows=300, seed=1)
    spec = parse_spec({"name": "churn", "data": {"path": "x", "target": "label"}}).for_task("binary")
    model, _ = fit_pipeline(spec, frame[FEATURES], frame["label"])
    return model


def serving(model, version: str = "7") -> ServingModel:
    roles = infer_columns(classification_frame(rows=10)[FEATURES])
    return ServingModel(
        name="churn", version=version, alias="champion", task="binary", features=tuple(FEATURES),
        categorical=roles.categorical, classes=tuple(model.classes_), model=model,
    )  # fmt: skip


@pytest.fixture
def log_uri(monkeypatch: pytest.MonkeyPatch) -> str:
    """A prediction and feedback log in fsspec's in-memory filesystem, unique to the test."""
    base = f"memory://conveyor-{uuid.uuid4().hex}"
    monkeypatch.setenv(predictions.PREDICTION_LOG_ENV, f"{base}/predictions")
    monkeypatch.setenv(predictions.FEEDBACK_LOG_ENV, f"{base}/feedback")
    return base


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.mark.parametrize("source", ["parquet", "csv"])
@pytest.mark.parametrize("target", ["parquet", "csv"])
def test_chunked_scoring_equals_predict_proba_on_the_whole_frame(
    tmp_path: Path, fitted, log_uri: str, source: str, target: str
) -> None:
    frame = classification_frame(rows=1000, seed=5).drop(columns="label")
    input_path = write(frame, tmp_path / f"new.{source}")
    output_path = tmp_path / "out" / f"scores.{target}"
    spec, model = make_spec(tmp_path), serving(fitted)

    summary = score_file(spec, model, open_input(str(input_path), model), str(output_path), chunk_rows=128)

    assert summary.rows == 1000 and summary.chunks == 8  # 7 full chunks and a last one of 104
    scores = read(output_path)
    assert list(scores.columns) == [
        "row_id",
        "prediction",
        "proba_no",
        "proba_yes",
        "model_version",
        "scored_at",
    ]
    expected = fitted.predict_proba(read(input_path)[FEATURES])
    np.testing.assert_allclose(scores[["proba_no", "proba_yes"]].to_numpy(), expected, rtol=1e-12)
    assert scores["prediction"].tolist() == fitted.predict(frame[FEATURES]).tolist()
    assert scores["row_id"].tolist() == frame["row_id"].tolist()
    assert set(scores["model_version"].astype(str)) == {"7"}
    stamps = pd.to_datetime(scores["scored_at"], utc=True)
    assert (datetime.now(UTC) - stamps.min().to_pydatetime()) < timedelta(minutes=5)


def test_parallel_chunks_keep_the_input_order_and_leave_openmp_alone(tmp_path: Path, fitted, log_uri: str) -> None:
    from threadpoolctl import threadpool_info

    def openmp_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]

    before = openmp_threads()
    frame = classification_frame(rows=1000, seed=4).drop(columns="label")
    source = open_input(str(write(frame, tmp_path / "new.parquet")), serving(fitted))
    outputs = {}
    for threads in (1, 3):
        path = tmp_path / f"scores-{threads}.parquet"
        score_file(make_spec(tmp_path), serving(fitted), source, str(path), 50, threads=threads)
        outputs[threads] = pd.read_parquet(path).drop(columns="scored_at")
    pd.testing.assert_frame_equal(outputs[1], outputs[3])
    assert outputs[3]["row_id"].tolist() == frame["row_id"].tolist()
    assert openmp_threads() == before  # the scoring threads' limit stays on those threads


def test_every_scored_row_goes_to_a_day_partition_of_the_log(tmp_path: Path, fitted, log_uri: str) -> None:
    frame = classification_frame(rows=300, seed=6).drop(columns="label")
    input_path = write(frame, tmp_path / "new.parquet")
    spec, model = make_spec(tmp_path), serving(fitted)
    summary = score_file(spec, model, open_input(str(input_path), model), str(tmp_path / "s.csv"), chunk_rows=100)

    day = datetime.now(UTC).date().isoformat()
    assert len(summary.log_files) == 1 and f"/churn/date={day}/part-" in summary.log_files[0]
    logged = predictions.read("churn")
    assert len(logged) == 300
    assert {"row_id", *FEATURES, "prediction", "proba_yes", "model_version", "scored_at"} <= set(logged.columns)
    pd.testing.assert_frame_equal(
        logged[FEATURES].reset_index(drop=True),
        frame[FEATURES].reset_index(drop=True),
        check_dtype=False,
    )
    assert predictions.read("churn", since=datetime.now(UTC) + timedelta(days=1)).empty
    assert len(predictions.read("churn", since=datetime.now(UTC) - timedelta(hours=1))) == 300


def test_without_an_id_column_rows_are_numbered(tmp_path: Path, fitted, log_uri: str) -> None:
    frame = classification_frame(rows=250, seed=7)[FEATURES]
    input_path = write(frame, tmp_path / "new.csv")
    spec, model = make_spec(tmp_path, id_column=None), serving(fitted)
    score_file(spec, model, open_input(str(input_path), model), str(tmp_path / "s.parquet"), chunk_rows=100)
    assert pd.read_parquet(tmp_path / "s.parquet")["row"].tolist() == list(range(250))


def test_csv_columns_take_the_models_types_not_the_first_blocks(
    tmp_path: Path, fitted, log_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x1 looks integral in the first block and colour numeric: neither may break a later block."""
    monkeypatch.setattr("tasks.scoring.arrow_io._CSV_BLOCK_BYTES", 1024)
    frame = classification_frame(rows=200, seed=8).drop(columns="label")
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[:149, "x1"] = 1
    frame.loc[:149, "colour"] = "7"
    input_path = write(frame, tmp_path / "new.csv")
    spec, model = make_spec(tmp_path), serving(fitted)
    source = open_input(str(input_path), model)
    assert source.column_types["x1"] == pa.float64() and source.column_types["colour"] == pa.string()
    summary = score_file(spec, model, source, str(tmp_path / "s.csv"), chunk_rows=50)
    assert summary.rows == 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="x2"), r"column 'x2' missing"),
        (lambda f: f.assign(extra=1), r"unexpected column 'extra'"),
        (
            lambda f: f.rename(columns={"x2": "x_2"}),
            r"column 'x2' is missing and column 'x_2' is not in",
        ),
        (lambda f: f.assign(label="yes"), r"unexpected column 'label'"),
    ],
    ids=["missing", "extra", "renamed", "target"],
)
@pytest.mark.parametrize("with_contract", [True, False], ids=["contract", "signature"])
def test_missing_or_extra_columns_are_refused_by_name(
    tmp_path: Path, fitted, change, message: str, with_contract: bool
) -> None:
    spec, model = make_spec(tmp_path), serving(fitted)
    if with_contract:
        save_contract(draft_contract(spec, classification_frame(rows=300, seed=1)), spec.contract_path)
    frame = change(classification_frame(rows=50, seed=9).drop(columns="label"))
    source = open_input(str(write(frame, tmp_path / "new.parquet")), model)
    with pytest.raises(DataError, match=message) as refused:
        check_input(spec, model, source, serving_suite(spec))
    assert str(refused.value).startswith(str(source.shown))
    assert "\n" not in str(refused.value)


def test_the_serving_contract_checks_values_with_gx_on_the_first_rows(tmp_path: Path, fitted) -> None:
    spec, model = make_spec(tmp_path), serving(fitted)
    save_contract(draft_contract(spec, classification_frame(rows=300, seed=1)), spec.contract_path)
    frame = classification_frame(rows=50, seed=9).drop(columns="label")
    frame.loc[3, "colour"] = "purple"
    source = open_input(str(write(frame, tmp_path / "new.parquet")), model)
    with pytest.raises(DataError, match=r"column 'colour': 1 value not in the contract's categories"):
        check_input(spec, model, source, serving_suite(spec))


def test_a_bad_value_in_a_late_chunk_refuses_the_input_and_leaves_nothing(
    tmp_path: Path, fitted, log_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tasks.scoring.contract.GX_SAMPLE_ROWS", 100)
    spec, model = make_spec(tmp_path), serving(fitted)
    save_contract(draft_contract(spec, classification_frame(rows=300, seed=1)), spec.contract_path)
    frame = classification_frame(rows=500, seed=9).drop(columns="label")
    frame.loc[420, "x1"] = 1e6
    source = open_input(str(write(frame, tmp_path / "new.parquet")), model)
    suite = serving_suite(spec)
    check_input(spec, model, source, suite)  # GX sees the first 100 rows: fine
    output = tmp_path / "scores.parquet"
    with pytest.raises(DataError, match=r"column 'x1': 1 value outside \[.*\] \(e.g. 1e\+06\) in rows 400-499"):
        score_file(spec, model, source, str(output), chunk_rows=100, suite=suite)
    assert not output.exists() and list(tmp_path.glob(".scores*")) == []
    assert predictions.read("churn").empty


def test_an_unsupported_output_format_is_refused_before_scoring(tmp_path: Path, fitted, log_uri: str) -> None:
    frame = classification_frame(rows=20, seed=3).drop(columns="label")
    spec, model = make_spec(tmp_path), serving(fitted)
    source = open_input(str(write(frame, tmp_path / "new.csv")), model)
    with pytest.raises(DataError, match=r"scores.xlsx: unsupported output format '.xlsx'"):
        score_file(spec, model, source, str(tmp_path / "scores.xlsx"))


# --- the log and late labels ----------------------------------------------------------------


def logged_rows(ids: list[int], at: datetime, version: str = "1") -> pa.Table:
    return pa.table(
        {
            "row_id": pa.array(ids, pa.int64()),
            "x1": pa.array([float(i) for i in ids]),
            "prediction": pa.array(["yes" if i % 2 else "no" for i in ids]),
            "model_version": pa.array([version] * len(ids)),
            "scored_at": pa.array([at] * len(ids), predictions.TIME_TYPE),
        }
    )


def test_append_partitions_by_day_and_read_filters_by_time(log_uri: str) -> None:
    monday = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)
    predictions.append("churn", logged_rows([1, 2], monday))
    predictions.append("churn", logged_rows([3], monday + timedelta(hours=1)))  # Tuesday 00:30
    fs, root = predictions.filesystem(predictions.prediction_log_uri("churn"))
    days = sorted(info.base_name for info in fs.get_file_info(pa.fs.FileSelector(root)))
    assert days == ["date=2026-03-02", "date=2026-03-03"]
    assert predictions.read("churn")["row_id"].tolist() == [1, 2, 3]
    assert predictions.read("churn", since=datetime(2026, 3, 3))["row_id"].tolist() == [3]
    assert predictions.read("churn", until=datetime(2026, 3, 3))["row_id"].tolist() == [1, 2]


def test_versions_with_different_columns_read_as_one_frame(log_uri: str) -> None:
    at = datetime(2026, 3, 2, 12, tzinfo=UTC)
    predictions.append("churn", logged_rows([1], at, "1"))
    predictions.append(
        "churn",
        logged_rows([2], at + timedelta(minutes=1), "2").append_column("x9", pa.array([0.5])),
    )
    frame = predictions.read("churn")
    assert frame["x9"].isna().tolist() == [True, False]


def labels_file(folder: Path, rows: dict[str, list], name: str) -> str:
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_the_last_label_per_id_wins_and_partial_labels_join(tmp_path: Path, log_uri: str) -> None:
    predictions.append("churn", logged_rows([1, 2, 3, 4], datetime.now(UTC)))
    early = {"row_id": [1, 2, 2, 9], "label": ["no", "no", "yes", "no"]}
    first = predictions.record_feedback(
        "churn", labels_file(tmp_path, early, "a.csv"), id_column="row_id", target="label"
    )
    assert (first.rows, first.recorded, first.skipped, first.matched) == (4, 3, 0, 2)
    late = {"row_id": [1, 3, None], "label": ["yes", "yes", "no"]}
    later = predictions.record_feedback(
        "churn", labels_file(tmp_path, late, "b.csv"), id_column="row_id", target="label"
    )
    assert later.skipped == 1
    joined = predictions.joined("churn", id_column="row_id").set_index("row_id")
    # 1: relabelled later; 2: its second row in the same file; 3: labelled late; 4: no label yet.
    assert joined.loc[[1, 2, 3], "label"].tolist() == ["yes", "yes", "yes"]
    assert pd.isna(joined.loc[4, "label"])
    assert joined.loc[1, "label_received_at"] > joined.loc[2, "label_received_at"]
    assert len(joined) == 4


def test_a_labels_file_without_the_id_or_target_column_is_refused(tmp_path: Path, log_uri: str) -> None:
    path = labels_file(tmp_path, {"customer": [1], "label": ["no"]}, "labels.csv")
    with pytest.raises(
        DataError,
        match=r"labels.csv: a labels file needs the id column 'row_id' and the target column "
        r"'label'; missing 'row_id'",
    ):
        predictions.record_feedback("churn", path, id_column="row_id", target="label")
    path = labels_file(tmp_path, {"row_id": [1], "outcome": ["no"]}, "outcomes.csv")
    with pytest.raises(DataError, match=r"missing 'label'"):
        predictions.record_feedback("churn", path, id_column="row_id", target="label")


def test_labels_take_the_logged_types(tmp_path: Path, log_uri: str) -> None:
    predictions.append("churn", logged_rows([1, 2], datetime.now(UTC)))
    path = tmp_path / "labels.parquet"
    pd.DataFrame({"row_id": ["1", "2"], "label": ["yes", "no"]}).to_parquet(path)
    predictions.record_feedback("churn", str(path), id_column="row_id", target="label")
    joined = predictions.joined("churn", id_column="row_id")
    assert joined["label"].tolist() == ["yes", "no"]


def test_feedback_needs_an_id_column_in_the_spec(tmp_path: Path, log_uri: str) -> None:
    path = labels_file(tmp_path, {"row": [1], "label": ["no"]}, "labels.csv")
    with pytest.raises(SpecError, match="data.id_column is not set"):
        predictions.record_feedback("churn", path, id_column="", target="label", source="pipelines/churn.yaml")
