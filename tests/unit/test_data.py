"""Loading data files: digests, globs, and one clear message for every file that can't be read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from conveyor.errors import DataError
from conveyor.spec import parse_spec
from tasks.data import (
    Dataset,
    contract_columns,
    data_digest,
    display_path,
    feature_frame,
    load_data,
    load_dataset,
    read_file,
    resolve_files,
)
from tests.corpus import CASES, good_frame

LOAD_CASES = [case for case in CASES if case.stage == "load"]


@pytest.mark.parametrize("case", LOAD_CASES, ids=[case.id for case in LOAD_CASES])
def test_bad_file_is_refused_with_file_column_and_problem(case, tmp_path: Path) -> None:
    path = case.write(tmp_path)
    with pytest.raises(DataError) as caught:
        load_dataset(str(path), case.data_options.get("max_file_mb", 2048))
    message = str(caught.value)
    assert "\n" not in message
    assert case.file in message
    if case.column:
        assert f"column {case.column!r}" in message
    assert re.search(case.problem, message), message


def test_oversize_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # Bytes no reader accepts: a read would fail differently from the size check.
    path = tmp_path / "huge.parquet"
    path.write_bytes(b"\x00" * 5000)
    with pytest.raises(DataError, match=r"huge.parquet: 5.0 kB is above the 0.004 MB limit"):
        load_dataset(str(path), max_file_mb=0.004)
    with pytest.raises(DataError, match=r"cannot be read as Parquet"):
        load_dataset(str(path), max_file_mb=1)


def test_every_file_of_a_glob_is_size_checked_before_any_is_read(tmp_path: Path) -> None:
    good_frame().to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "b.csv").write_bytes(b"x" * 20_000)
    with pytest.raises(DataError, match=r"b.csv: 20.0 kB is above"):
        load_dataset(str(tmp_path / "*.csv"), max_file_mb=0.019)
    with pytest.raises(DataError, match=r"b.csv: 20.0 kB is above"):
        data_digest(str(tmp_path / "*.csv"), max_file_mb=0.019)


def test_data_digest_matches_the_loaded_dataset(tmp_path: Path) -> None:
    good_frame(rows=10).to_csv(tmp_path / "a.csv", index=False)
    good_frame(rows=12).to_csv(tmp_path / "b.csv", index=False)
    assert data_digest(str(tmp_path / "*.csv")) == load_dataset(str(tmp_path / "*.csv")).digest


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file \(the folder .*nowhere does not exist\)"):
        resolve_files(str(tmp_path / "nowhere" / "x.csv"))


def test_folder_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(DataError, match=r"the folder holds no .csv or .parquet file"):
        resolve_files(str(tmp_path))


def test_blank_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"blank.csv: no header row"):
        read_file(str(path), 10)


def test_not_utf8_header_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(b"id,na\xefve\n1,2\n")
    with pytest.raises(DataError, match=r"header.csv: not UTF-8 text: byte 0xef at line 1, column 6"):
        read_file(str(path), 10)


def test_single_column_against_the_contract_is_a_delimiter_error(tmp_path: Path) -> None:
    path = tmp_path / "spaces.csv"
    path.write_text("a b c\n1 2 3\n")
    assert read_file(str(path), 10).shape == (
        1,
        1,
    )  # nothing to compare with: a valid 1-column file
    with pytest.raises(DataError, match=r"parsed as a single column 'a b c' but the contract expects 3 columns"):
        read_file(str(path), 10, expected_columns=["a", "b", "c"])


@pytest.mark.parametrize(("delimiter", "shown"), [("\t", "a tab"), ("|", "'|'")])
def test_other_delimiters_are_named(tmp_path: Path, delimiter: str, shown: str) -> None:
    path = tmp_path / "data.csv"
    good_frame(rows=5).to_csv(path, index=False, sep=delimiter)
    with pytest.raises(DataError, match=f"the delimiter looks like {re.escape(shown)}"):
        read_file(str(path), 10)


def test_glob_reads_files_in_order_with_digests_and_row_sources(tmp_path: Path) -> None:
    frame = good_frame(rows=30)
    frame.iloc[:10].to_csv(tmp_path / "part-1.csv", index=False)
    # Column order may differ between exports: the frame follows the first file.
    frame.iloc[10:][list(reversed(frame.columns))].to_csv(tmp_path / "part-2.csv", index=False)
    dataset = load_dataset(str(tmp_path / "part-*.csv"))
    assert [Path(f).name for f in dataset.files] == ["part-1.csv", "part-2.csv"]
    assert list(dataset.frame.columns) == list(frame.columns)
    assert dataset.row_counts == (10, 20)
    assert Path(dataset.file_of_row(9)).name == "part-1.csv"
    assert Path(dataset.file_of_row(10)).name == "part-2.csv"
    pd.testing.assert_frame_equal(dataset.frame, frame.reset_index(drop=True), check_dtype=False)
    assert set(dataset.file_digests) == set(dataset.files)


def test_digest_follows_content_not_names(tmp_path: Path) -> None:
    good_frame(rows=20).to_csv(tmp_path / "a.csv", index=False)
    first = load_dataset(str(tmp_path / "a.csv")).digest
    (tmp_path / "a.csv").rename(tmp_path / "b.csv")
    assert load_dataset(str(tmp_path / "b.csv")).digest == first
    good_frame(rows=21).to_csv(tmp_path / "b.csv", index=False)
    assert load_dataset(str(tmp_path / "b.csv")).digest != first


def test_files_of_a_glob_must_share_columns(tmp_path: Path) -> None:
    frame = good_frame(rows=10)
    frame.to_csv(tmp_path / "1.csv", index=False)
    frame.drop(columns=["colour"]).assign(color="red").to_csv(tmp_path / "2.csv", index=False)
    with pytest.raises(DataError, match=r"2.csv: column 'colour' missing; unexpected column 'color'"):
        load_dataset(str(tmp_path / "*.csv"))


def test_an_all_missing_column_does_not_count_as_another_type(tmp_path: Path) -> None:
    frame = good_frame(rows=10)
    frame.to_csv(tmp_path / "1.csv", index=False)
    frame.assign(colour=None).to_csv(tmp_path / "2.csv", index=False)
    assert len(load_dataset(str(tmp_path / "*.csv")).frame) == 20


def test_parquet_and_csv_read_alike(tmp_path: Path) -> None:
    frame = good_frame(rows=10)
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_csv(tmp_path / "d.csv", index=False)
    from_parquet = load_dataset(str(tmp_path / "d.parquet")).frame
    from_csv = load_dataset(str(tmp_path / "d.csv")).frame
    pd.testing.assert_frame_equal(from_parquet, from_csv, check_dtype=False)


def test_contract_columns_reads_the_column_set(tmp_path: Path) -> None:
    path = tmp_path / "m.expectations.json"
    assert contract_columns(path) is None
    path.write_text("{not json")
    assert contract_columns(path) is None
    suite = {"expectations": [{"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["a", "b"]}}]}
    path.write_text(json.dumps(suite))
    assert contract_columns(path) == ["a", "b"]


def test_load_data_task_uses_the_contract_to_spot_a_wrong_delimiter(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a b c\n1 2 3\n")
    spec = parse_spec({"name": "m", "data": {"path": "data.csv", "target": "c"}}, str(tmp_path / "m.yaml"))
    assert load_data.fn(spec).frame.shape == (1, 1)
    suite = {"expectations": [{"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["a", "b", "c"]}}]}
    (tmp_path / "m.expectations.json").write_text(json.dumps(suite))
    with pytest.raises(DataError, match=r"data.csv: parsed as a single column"):
        load_data.fn(spec)


def test_load_data_task_resolves_an_override_path_against_the_spec(tmp_path: Path) -> None:
    (tmp_path / "other.csv").write_text("a,c\n1,2\n")
    spec = parse_spec({"name": "m", "data": {"path": "missing.csv", "target": "c"}}, str(tmp_path / "m.yaml"))
    dataset: Dataset = load_data.fn(spec, "other.csv")
    assert dataset.frame.shape == (1, 2)
    with pytest.raises(DataError, match=r"missing.csv: no such file"):
        load_data.fn(spec)


def test_feature_frame_leaves_out_target_id_and_dropped() -> None:
    spec = parse_spec(
        {
            "name": "m",
            "data": {"path": "d.csv", "target": "label", "id_column": "row_id", "drop": ["x2"]},
        }
    )
    assert list(feature_frame(spec, good_frame(rows=5)).columns) == ["x1", "colour"]


def test_display_path_is_relative_inside_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(str(tmp_path / "data" / "x.csv")) == str(Path("data") / "x.csv")
    assert display_path("/elsewhere/x.csv") == "/elsewhere/x.csv"
    assert display_path("s3://bucket/x.csv") == "s3://bucket/x.csv"


def test_a_class_with_one_row_that_lands_in_the_holdout_is_refused_by_name() -> None:
    from tasks.data import split_frame

    frame = pd.DataFrame({"x": range(60), "y": ["a", "b"] * 29 + ["c", "d"]})
    refused = 0
    for seed in range(10):  # which split lands the single rows in the holdout depends on the seed
        data = {"path": "x.csv", "target": "y", "split": {"seed": seed}}
        seeded = parse_spec({"name": "t", "task": "multiclass", "data": data})
        try:
            split = split_frame(seeded, frame)
        except DataError as error:
            refused += 1
            assert "\n" not in str(error) and "target 'y'" in str(error)
            assert re.search(r"'[cd]' \(1 row\)", str(error))
        else:
            assert set(split.y_test) <= set(split.y_train)
    assert refused > 0


def test_a_symlink_loop_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    with pytest.raises(DataError, match=r"a\.csv: a symbolic link that leads nowhere \(a loop"):
        resolve_files(str(tmp_path / "a.csv"))
    # Through a spec, whose relative data.path is resolved against the spec's folder first.
    spec = parse_spec({"name": "t", "data": {"path": "a.csv", "target": "y"}}, str(tmp_path / "t.yaml"))
    with pytest.raises(DataError, match="symbolic link"):
        load_data.fn(spec)


def test_a_folder_of_too_many_files_is_refused_before_reading(tmp_path: Path) -> None:
    from tasks.data import MAX_FILES

    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(MAX_FILES + 1):
        (folder / f"part-{index:05d}.csv").write_text("x,y\n1,2\n")
    for pattern in (str(folder), str(folder / "*.csv")):
        with pytest.raises(DataError, match=f"names {MAX_FILES + 1} files, more than the {MAX_FILES}"):
            load_dataset(pattern)


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.bz2", ".csv.zip"])
def test_a_small_archive_that_expands_past_the_limit_is_refused_unread(tmp_path: Path, suffix: str) -> None:
    """max_file_mb bounds what is read, not what is on disk: 3 MB of rows compress to a few kB."""
    from tasks.data import check_size

    frame = pd.DataFrame({"a": [0.0] * 150_000, "b": ["same text"] * 150_000})
    path = tmp_path / f"big{suffix}"
    frame.to_csv(path, index=False)
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match=r"expands to more than the 1 MB limit"):
        check_size(str(path), 1)
    check_size(str(path), 10)  # within a larger limit it passes
