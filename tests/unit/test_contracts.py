"""Data contracts: drafting, storage, overrides, and refusing every kind of bad data (real GX)."""

from __future__ import annotations

import gc
import json
import logging
import re
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conveyor.errors import DataError, SpecError
from conveyor.spec import parse_spec
from tasks.contracts import (
    BETWEEN,
    COLUMN_SET,
    DUPLICATES,
    IN_SET,
    NOT_NULL,
    ROW_COUNT,
    apply_overrides,
    check,
    draft_contract,
    ensure_contract,
    init_contract,
    leaked_columns,
    load_contract,
    save_contract,
    serving_contract,
    validate_dataset,
    validate_frame,
)
from tasks.contracts.checks import own_check_names
from tasks.contracts.families import missing_spellings
from tasks.contracts.gx_runner import fast_duplicates, gx_results, gx_validator, run_gx, widened_numbers
from tasks.data import load_dataset
from tests.corpus import CASES, MODEL, SHAPES, good_frame, spec_document, write_spec_file

CONTRACT_CASES = [case for case in CASES if case.stage == "contract"]


def make_spec(folder: Path, name: str = MODEL, data: str = "data/train.csv", **sections):
    document = spec_document(name, data)
    document.update(sections)
    return parse_spec(document, str(folder / "pipelines" / f"{name}.yaml"))


def find(suite: dict, kind: str, column: str | None = None) -> list[dict]:
    return [e for e in suite["expectations"] if e["type"] == kind and e["kwargs"].get("column") == column]


@pytest.fixture
def spec(tmp_path: Path):
    return make_spec(tmp_path)


@pytest.fixture
def suite(spec) -> dict:
    return draft_contract(spec, good_frame())


# --- drafting -----------------------------------------------------------------------------


def test_draft_is_gx_suite_json_that_loads_back_into_gx(suite: dict) -> None:
    from great_expectations.core import ExpectationSuite

    text = json.dumps(suite, allow_nan=False)
    loaded = ExpectationSuite(**json.loads(text))
    assert len(loaded.expectations) == len(suite["expectations"])
    dumped = loaded.to_json_dict()
    assert [e["type"] for e in dumped["expectations"]] == [e["type"] for e in suite["expectations"]]
    for ours, theirs in zip(suite["expectations"], dumped["expectations"], strict=True):
        assert theirs["meta"]["on_violation"] == ours["meta"]["on_violation"]
        assert theirs["kwargs"].get("column") == ours["kwargs"].get("column")
        assert theirs["severity"] == ours["severity"]


def test_draft_fixes_columns_types_nulls_ranges_categories_classes(spec, suite: dict) -> None:
    frame = good_frame()
    (columns,) = find(suite, COLUMN_SET)
    assert columns["kwargs"] == {"column_set": list(frame.columns), "exact_match": True}
    (rows,) = find(suite, ROW_COUNT)
    assert rows["kwargs"]["min_value"] == 40  # a tenth of the 400 rows it was drafted from
    (dupes,) = find(suite, DUPLICATES)
    assert dupes["kwargs"]["column_list"] == ["x1", "x2", "colour", "label"]  # the id aside
    assert dupes["kwargs"]["mostly"] == pytest.approx(0.9)
    for column in frame.columns:
        assert find(suite, NOT_NULL, column), column
    (x1,) = find(suite, BETWEEN, "x1")
    low, high = frame["x1"].min(), frame["x1"].max()
    span = high - low
    assert low - 0.11 * span < x1["kwargs"]["min_value"] <= low - 0.1 * span
    assert high + 0.1 * span <= x1["kwargs"]["max_value"] < high + 0.11 * span
    assert find(suite, IN_SET, "colour")[0]["kwargs"]["value_set"] == ["blue", "green", "red"]
    assert find(suite, IN_SET, "label")[0]["kwargs"]["value_set"] == ["no", "yes"]
    assert not find(suite, BETWEEN, "row_id") and not find(suite, IN_SET, "row_id")  # ids are free
    assert {e["meta"]["on_violation"] for e in suite["expectations"]} == {"fail"}
    assert suite["meta"]["conveyor"]["task"] == "binary"


def test_draft_tolerances_and_special_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "count": rng.integers(0, 101, size=200),  # never negative, integral
            "score": np.where(rng.random(200) < 0.2, np.nan, rng.normal(size=200)),  # 20% missing
            "name": [f"person {i}" for i in range(200)],  # free text: no value set
            "city": rng.choice(["a", "b"], size=200),
            "ignored": rng.normal(size=200),
            "label": rng.choice(["x", "y", "z"], size=200),
        }
    )
    spec = parse_spec(
        {
            "name": "m",
            "data": {"path": "d.csv", "target": "label", "drop": ["ignored"]},
            "contract": {"range_tolerance": 0.5, "min_rows": 7, "max_duplicate_fraction": 1.0,
                         "allow_unseen_categories": True},
        }
    )  # fmt: skip
    suite = draft_contract(spec, frame)
    assert find(suite, BETWEEN, "count")[0]["kwargs"] == {
        "column": "count",
        "min_value": 0,
        "max_value": 150,
    }
    (score_nulls,) = find(suite, NOT_NULL, "score")
    missing = frame["score"].isna().mean()
    assert score_nulls["kwargs"]["mostly"] == pytest.approx(1 - (missing * 1.5 + 0.05), abs=1e-4)
    assert not find(suite, IN_SET, "name")
    (city,) = find(suite, IN_SET, "city")
    assert city["meta"]["on_violation"] == "warn" and city["severity"] == "warning"
    assert find(suite, IN_SET, "label")[0]["meta"]["on_violation"] == "fail"  # classes stay strict
    assert [e["type"] for e in suite["expectations"] if e["kwargs"].get("column") == "ignored"] == []
    assert "ignored" in find(suite, COLUMN_SET)[0]["kwargs"]["column_set"]
    assert find(suite, ROW_COUNT)[0]["kwargs"]["min_value"] == 7
    assert not find(suite, DUPLICATES)


def test_regression_target_gets_a_range_not_classes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": np.arange(100.0), "y": np.linspace(10, 20, 100)})
    suite = draft_contract(parse_spec({"name": "r", "data": {"path": "d.csv", "target": "y"}}), frame)
    assert not find(suite, IN_SET, "y")
    assert find(suite, BETWEEN, "y")[0]["kwargs"] == {
        "column": "y",
        "min_value": 9.0,
        "max_value": 21.0,
    }


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([1, 2, 3, 4], dtype="int64"),
        pd.Series([1, None, 3, 4], dtype="Int64"),
        pd.Series([1.5, 2.5, None, 4.0], dtype="float32"),
        pd.Series([True, False, True, True]),
        pd.Series([True, None, False, True], dtype="boolean"),
        pd.Series(["a", "b", None, "a"], dtype="str"),
        pd.Series(["a", "b", None, "a"], dtype="string[pyarrow]"),
        pd.Series(["a", "b", None, "a"], dtype="string[python]"),
        pd.Series(["a", "b", "c", "a"], dtype=object),
        pd.to_datetime(pd.Series(["2024-01-01", "2024-02-01", None, "2024-03-01"])),
    ],
    ids=["int64", "Int64", "float32", "bool", "boolean", "str", "string-pyarrow", "string-python",
         "object", "datetime"],
)  # fmt: skip
def test_type_checks_accept_what_they_were_drafted_from(values: pd.Series) -> None:
    frame = pd.DataFrame({"v": values, "label": ["p", "q", "p", "q"]})
    spec = parse_spec({"name": "m", "data": {"path": "d.csv", "target": "label"},
                       "contract": {"max_duplicate_fraction": 1.0}})  # fmt: skip
    suite = draft_contract(spec, frame)
    report = validate_frame(frame, suite, spec, "d.csv")
    assert report.success, report.message()
    assert any(e["kwargs"].get("column") == "v" and "type" in e["type"] for e in suite["expectations"])


def test_overrides_replace_by_type_and_column_or_add(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        contract={
            "expectations": [
                {"type": BETWEEN, "column": "x1", "kwargs": {"min_value": -1, "max_value": 1}},
                {"type": "expect_column_mean_to_be_between", "column": "x2",
                 "kwargs": {"min_value": 0.5, "max_value": 1.0}, "on_violation": "warn"},
            ]
        },
    )  # fmt: skip
    suite = draft_contract(spec, good_frame())
    (x1,) = find(suite, BETWEEN, "x1")
    assert x1["kwargs"] == {"min_value": -1, "max_value": 1, "column": "x1"}
    assert x1["meta"]["origin"] == "spec"
    (mean,) = find(suite, "expect_column_mean_to_be_between", "x2")
    assert mean["meta"]["on_violation"] == "warn"
    # Applied again on a stored contract, nothing doubles.
    assert apply_overrides(suite, spec.contract.expectations) == suite
    report = validate_frame(good_frame(), suite, spec, "train.csv")
    assert not report.success
    assert report.failures[0].expectation == BETWEEN and report.failures[0].column == "x1"
    assert [w.expectation for w in report.warnings] == ["expect_column_mean_to_be_between"]


def test_an_override_gx_cannot_build_is_a_spec_error_naming_the_contract(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        contract={"expectations": [{"type": "expect_column_to_be_lovely", "column": "x1"}]},
    )
    good_frame().to_csv(_data(tmp_path), index=False)
    dataset = load_dataset(str(_data(tmp_path)))
    with pytest.raises(
        SpecError,
        match=r"churn.expectations.json: expectation expect_column_to_be_lovely on column 'x1'",
    ):
        validate_dataset(spec, dataset)


def test_serving_contract_drops_the_target_and_the_row_floor(suite: dict, spec) -> None:
    serving = serving_contract(suite, "label")
    assert not [e for e in serving["expectations"] if e["kwargs"].get("column") == "label"]
    assert "label" not in find(serving, COLUMN_SET)[0]["kwargs"]["column_set"]
    assert find(serving, ROW_COUNT)[0]["kwargs"]["min_value"] == 1
    assert not find(serving, DUPLICATES)
    batch = good_frame(rows=3, seed=5).drop(columns=["label"])
    assert validate_frame(batch, serving, spec, "batch.csv").success
    refused = validate_frame(good_frame(rows=3, seed=5), serving, spec, "batch.csv")
    assert "unexpected column 'label'" in refused.message()  # strict about extra columns too
    assert "label" in find(suite, COLUMN_SET)[0]["kwargs"]["column_set"]  # the original is untouched


# --- storage ------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path, suite: dict) -> None:
    path = save_contract(suite, tmp_path / "pipelines" / "m.expectations.json")
    assert load_contract(path) == suite
    assert path.read_text().startswith('{\n  "name"')  # indented: reviewable in a diff


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{\n  "name": "m",\n  "expectations": [,]\n}', r"invalid JSON at line 3, column 20"),
        ("[]", r"not an expectation suite"),
        ('{"expectations": [{"kwargs": {}}]}', r"expectation 0 has no 'type'"),
        (
            '{"expectations": [{"type": "x", "meta": {"on_violation": "shout"}}]}',
            r"expectation 0 \(x\): meta.on_violation must be 'fail' or 'warn', not 'shout'",
        ),
    ],
)
def test_a_broken_contract_file_is_a_spec_error_naming_it(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "m.expectations.json"
    path.write_text(content)
    with pytest.raises(SpecError, match=rf"m.expectations.json: {problem}"):
        load_contract(path)


def test_ensure_contract_drafts_once_then_keeps_the_reviewed_file(spec) -> None:
    suite, drafted = ensure_contract(spec, good_frame())
    assert drafted and spec.contract_path.exists()
    edited = json.loads(spec.contract_path.read_text())
    edited["expectations"] = [e for e in edited["expectations"] if e["type"] != IN_SET]
    spec.contract_path.write_text(json.dumps(edited))
    again, drafted = ensure_contract(spec, good_frame(seed=3))
    assert not drafted
    assert again == edited


# --- the bad-input corpus -----------------------------------------------------------------


def _data(folder: Path) -> Path:
    path = folder / "data" / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("case", CONTRACT_CASES, ids=[case.id for case in CONTRACT_CASES])
def test_bad_data_is_refused_with_file_column_and_problem(case, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, name=case.model)
    if case.model == MODEL:  # the contract was drafted from good data; leaky data drafts its own
        good_frame().to_csv(_data(tmp_path), index=False)
        ensure_contract(spec, load_dataset(str(_data(tmp_path))).frame)
    dataset = load_dataset(str(case.write(tmp_path / "incoming")))
    report = validate_dataset(spec, dataset)
    assert not report.success
    with pytest.raises(DataError) as caught:
        check(report)
    message = str(caught.value)
    assert "\n" not in message
    assert case.file in message
    if case.column:
        assert f"column {case.column!r}" in message or f"column {case.column!r}" in message.replace("and column", "")
    assert re.search(case.problem, message), message
    assert caught.value.report is not None
    json.dumps(caught.value.report, allow_nan=False)  # goes to MLflow as JSON
    assert caught.value.report["failures"][0]["problem"] in message


def test_a_contract_drafted_from_refused_data_is_not_kept(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, name="leaky")
    leaky = next(case for case in CASES if case.id == "label_leakage")
    report = validate_dataset(spec, load_dataset(str(leaky.write(tmp_path))))
    assert report.drafted and not report.success
    assert not spec.contract_path.exists()


def test_leakage_can_be_downgraded_to_a_loud_warning(tmp_path: Path, caplog) -> None:
    spec = make_spec(tmp_path, name="leaky", contract={"leakage": "warn"})
    leaky = next(case for case in CASES if case.id == "label_leakage")
    report = validate_dataset(spec, load_dataset(str(leaky.write(tmp_path))))
    assert report.success
    assert [w.column for w in report.warnings] == ["outcome_code"]
    with caplog.at_level(logging.WARNING, logger="tasks.contracts"):
        check(report)  # warnings never raise
    assert "label leakage" in caplog.text


def test_a_bad_row_in_a_glob_names_the_file_it_came_from(tmp_path: Path, spec) -> None:
    good_frame().to_csv(_data(tmp_path), index=False)
    ensure_contract(spec, load_dataset(str(_data(tmp_path))).frame)
    frame = good_frame(seed=1)
    frame.iloc[:200].to_csv(tmp_path / "part-1.csv", index=False)
    later = frame.iloc[200:].copy()
    later.loc[later.index[50], "x1"] = 999.0
    later.to_csv(tmp_path / "part-2.csv", index=False)
    report = validate_dataset(spec, load_dataset(str(tmp_path / "part-*.csv")))
    assert re.match(r".*part-2.csv: column 'x1': 1 value outside \[.*\] \(e.g. 999\)$", report.message())
    assert report.failures[0].rows == [250]


@pytest.mark.parametrize(
    ("target", "feature", "leaks"),
    [
        (["a", "b"] * 50, ["b", "a"] * 50, True),  # a recoding
        (["a", "b"] * 50, list(range(100)), False),  # an id-like column
        (np.linspace(0, 1, 100), np.linspace(0, 1, 100) * 100 + 3, True),  # a rescaled copy
        (np.linspace(0, 1, 100), np.random.default_rng(0).normal(size=100), False),  # all distinct
        (np.linspace(0, 1, 100), np.linspace(0, 1, 100) ** 3, False),  # related, not a copy
    ],
)
def test_leaked_columns(target, feature, leaks: bool) -> None:
    frame = pd.DataFrame({"f": feature})
    assert leaked_columns(frame, pd.Series(target)) == (["f"] if leaks else [])


def test_duplicate_check_agrees_with_gx(spec) -> None:
    frame = pd.concat([good_frame(rows=50), good_frame(rows=50).iloc[:7]], ignore_index=True)
    frame.loc[[0, 1], "x1"] = np.nan  # missing values compare equal as in GX
    frame.loc[1, ["x2", "colour", "label"]] = frame.loc[0, ["x2", "colour", "label"]]
    kwargs = {
        "column_list": ["x1", "x2", "colour", "label"],
        "mostly": 0.9,
        "ignore_row_if": "never",
    }
    (result,) = run_gx(gx_validator(frame), [{"type": DUPLICATES, "kwargs": kwargs}], "SUMMARY").values()
    passed, involved, repeats = fast_duplicates(frame, kwargs)
    # Rows 2-6 and their copies, and rows 0-1 (equal, missing x1 included).
    assert involved == result.result["unexpected_count"] == 12
    assert passed is result.success is False
    assert repeats == 6


def test_report_markdown_and_message(tmp_path: Path, spec, suite: dict) -> None:
    frame = good_frame()
    frame.loc[[1, 2], "x1"] = 500.0
    frame.loc[3, "colour"] = "mauve"
    report = validate_frame(frame, suite, spec, str(tmp_path / "train.csv"))
    assert report.message().endswith("(and 1 more problem: see the validation report)")
    markdown = report.markdown()
    assert markdown.startswith("# Data validation: **refused**")
    assert "| fail | x1 | expect_column_values_to_be_between |" in markdown
    assert "| fail | colour | expect_column_values_to_be_in_set |" in markdown
    data = report.to_dict()
    assert data["success"] is False and data["rows"] == 400
    assert data["failures"][0]["examples"] == [500.0]  # distinct examples only
    passed = validate_frame(good_frame(), suite, spec, "train.csv")
    assert passed.message() == f"train.csv: 400 rows pass the contract ({passed.expectations} checks)"
    assert passed.markdown().startswith("# Data validation: passed")


def test_validation_writes_nothing_to_the_terminal(spec, suite: dict, capfd) -> None:
    bad = good_frame()
    bad.loc[0, "x1"] = 1e9
    validate_frame(bad, suite, spec, "train.csv")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # no progress bars, no GX chatter


def test_init_contract_drafts_refuses_to_overwrite_and_redrafts_on_force(tmp_path: Path) -> None:
    good_frame().to_csv(_data(tmp_path), index=False)
    spec_path = write_spec_file(tmp_path / "pipelines", MODEL, spec_document(MODEL, "../data/train.csv"))
    path = init_contract(str(spec_path))
    assert path == tmp_path / "pipelines" / f"{MODEL}.expectations.json"
    first = load_contract(path)
    assert find(first, IN_SET, "colour")
    with pytest.raises(SpecError, match=r"a contract already exists; edit it, or pass --force"):
        init_contract(str(spec_path))
    good_frame(rows=1000, seed=4).to_csv(_data(tmp_path), index=False)
    init_contract(str(spec_path), force=True)
    assert find(load_contract(path), ROW_COUNT)[0]["kwargs"]["min_value"] == 100


def test_init_contract_will_not_draft_from_data_it_would_refuse(tmp_path: Path) -> None:
    frame = good_frame().assign(copy_of_label=lambda d: d["label"])
    frame.to_csv(_data(tmp_path), index=False)
    spec_path = write_spec_file(tmp_path / "pipelines", MODEL, spec_document(MODEL, "../data/train.csv"))
    with pytest.raises(DataError, match=r"train.csv: column 'copy_of_label': copies the target"):
        init_contract(str(spec_path))
    assert not (tmp_path / "pipelines" / f"{MODEL}.expectations.json").exists()
    spec_path.write_text(spec_path.read_text().replace("target: label", "target: nope"))
    with pytest.raises(DataError, match=r"target column 'nope' is not in the data"):
        init_contract(str(spec_path))


# --- data as people have it ---------------------------------------------------------------


def _shape_spec(folder: Path):
    return parse_spec({"name": "shapes", "data": {"path": "data/good.csv", "target": "label"}},
                      str(folder / "pipelines" / "shapes.yaml"))  # fmt: skip


def _load(folder: Path, name: str, frame: pd.DataFrame):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return load_dataset(str(path))


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.id for shape in SHAPES])
def test_a_draft_accepts_its_own_file_and_refuses_a_broken_one_rightly(shape, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # messages name files as a user typed them
    spec = _shape_spec(tmp_path)
    good = shape.good()
    report = validate_dataset(spec, _load(tmp_path, "data/good.csv", good))
    assert report.drafted and report.success, report.message()
    stored = load_contract(spec.contract_path)  # the draft went to disk as JSON and reads back
    assert stored["expectations"] == report.suite["expectations"]
    assert validate_dataset(spec, _load(tmp_path, "data/good.csv", good)).success  # and passes from disk
    if shape.also_good is not None:
        again = validate_dataset(spec, _load(tmp_path, "data/also.csv", shape.also_good(good)))
        assert again.success, again.message()
    refused = validate_dataset(spec, _load(tmp_path, "data/broken.csv", shape.broken(good)))
    assert not refused.success
    message = refused.message()
    assert message.startswith(f"data/broken.csv: column {shape.column!r}: ") or (
        message.startswith("data/broken.csv: ") and repr(shape.column) in message
    ), message
    assert re.search(shape.problem, message), message
    json.dumps(refused.to_dict(), allow_nan=False)


DATE_FRAMES = {
    "date": ["1970-01-01", "1975-06-30", None, "1982-01-01"],
    "datetime": ["2024-01-01 10:00:00", "2024-02-01 11:30:00", None, "2024-03-01 00:00:00"],
    "datetime with zone": ["2024-01-01T10:00:00Z", "2024-02-01T11:30:00+02:00", None, "2024-03-01T00:00:00-05:00"],
}


@pytest.mark.parametrize("family", DATE_FRAMES)
def test_dates_are_typed_ranged_and_kept_in_the_serving_contract(family: str, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    frame = pd.DataFrame({"when": DATE_FRAMES[family] * 10, "x": np.arange(40.0), "label": ["p", "q"] * 20})
    path = tmp_path / "dates.csv"
    frame.to_csv(path, index=False)
    read = load_dataset(str(path)).frame
    spec = parse_spec({"name": "d", "data": {"path": "dates.csv", "target": "label"}})
    suite = draft_contract(spec, read)
    (typed,) = [e for e in suite["expectations"] if e["kwargs"].get("column") == "when" and "type" in e["type"]]
    assert typed["meta"]["family"] == family.replace(" with zone", "_tz")
    (dates,) = find(suite, BETWEEN, "when")
    low, high = pd.Timestamp(dates["kwargs"]["min_value"]), pd.Timestamp(dates["kwargs"]["max_value"])
    first, last = pd.to_datetime(read["when"].dropna(), utc=family.endswith("zone")).agg(["min", "max"])
    span = last - first
    assert first - 0.11 * span <= low <= first - 0.1 * span and last + 0.1 * span <= high <= last + 0.11 * span
    save_contract(suite, tmp_path / "d.expectations.json")
    assert validate_frame(read, load_contract(tmp_path / "d.expectations.json"), spec, "dates.csv").success
    # Scoring reads the batch with pyarrow's CSV reader, without the target.
    batch = pacsv.read_csv(path).to_pandas().drop(columns=["label"])
    assert validate_frame(batch, serving_contract(suite, "label"), spec, "batch.csv").success
    # Rows to score come later than the rows the model learnt from: no upper bound there, the lower one holds.
    later, earlier = batch.copy(), batch.copy()
    later.loc[0, "when"] = later["when"].max() + pd.Timedelta(days=3650)
    earlier.loc[0, "when"] = earlier["when"].min() - pd.Timedelta(days=3650)
    assert validate_frame(later, serving_contract(suite, "label"), spec, "batch.csv").success
    refused = validate_frame(earlier, serving_contract(suite, "label"), spec, "batch.csv")
    assert refused.message().startswith(
        f"batch.csv: column 'when': 1 value before {dates['kwargs']['min_value']} (e.g. "
    )
    assert not validate_frame(later, suite, spec, "train.csv").success  # training keeps both bounds


def test_the_drafted_count_of_checks_is_the_count_the_report_gives(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    good_frame().to_csv(_data(tmp_path), index=False)
    report = validate_dataset(spec, load_dataset(str(_data(tmp_path))))
    drafted = re.search(r"drafted a contract of (\d+) checks", report.draft_note() or "")
    checked = re.search(r"\((\d+) checks\)", report.message())
    assert drafted and checked and drafted.group(1) == checked.group(1) == str(report.expectations)
    assert f"{report.expectations} checks in" in report.markdown()
    # The suite's expectations and the own checks that ran: every own check runs on data with its target.
    assert report.expectations == len(report.suite["expectations"]) + len(own_check_names(spec, good_frame()))
    serving = validate_frame(good_frame().drop(columns=["label"]), serving_contract(report.suite, "label"), spec, "b")
    assert serving.expectations < report.expectations  # no target: fewer checks, and the count says so


@pytest.mark.parametrize(
    ("values", "spellings"),
    [
        (["12", "?", "7.5", "-3", "?"], ["?"]),  # cars' horsepower
        (["1", "n.a.", "2", "-", "3"], ["-", "n.a."]),
        (["1", "2", "abc", "4", "5"], None),  # a word among numbers is text, not a spelling of missing
        (["red", "green", "?", "blue", "red"], None),  # text with a '?' is text
        (["1", "2", "3", "4", "5"], None),  # numbers as text, nothing missing: no spelling to name
    ],
)
def test_a_spelling_of_missing_among_numbers_is_found_and_nothing_else(values, spellings) -> None:
    assert missing_spellings(pd.Series(values, dtype="str")) == spellings


def test_a_mixed_object_column_gets_no_wrong_type_and_passes_its_draft() -> None:
    frame = pd.DataFrame({"v": pd.Series([1, "a", None, 2.5] * 5, dtype=object), "label": ["p", "q"] * 10})
    spec = parse_spec({"name": "m", "data": {"path": "d.csv", "target": "label"},
                       "contract": {"max_duplicate_fraction": 1.0}})  # fmt: skip
    suite = draft_contract(spec, frame)
    assert [e["type"] for e in suite["expectations"] if e["kwargs"].get("column") == "v"] == [NOT_NULL]
    assert validate_frame(frame, suite, spec, "d.csv").success


def test_narrow_number_columns_get_the_same_results_as_gx_gives_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX checks a float32 or int32 column's range value by value in Python (9x slower than its
    vectorised path for 64-bit columns): Conveyor hands GX those columns widened, for range checks
    only; type checks see the data's own dtypes."""
    frame = pd.DataFrame(
        {
            "f32": np.array([0.1, 2.5, 7.1, np.nan, 1.0], dtype="float32"),
            "i16": np.array([1, 2, 3, 4, 500], dtype="int16"),
            "u8": np.array([0, 1, 2, 3, 4], dtype="uint8"),
            "f64": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    expectations = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f32", "min_value": 0, "max_value": 5}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "i16", "min_value": 0, "max_value": 9}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "u8", "min_value": 0, "max_value": 9}},
        {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": "f32", "type_list": ["float32"]}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "f64", "min_value": 2, "max_value": 9}},
    ]
    from tasks.contracts import gx_runner

    handed: list[tuple[list[str], weakref.ref[pd.DataFrame]]] = []

    def recording(data: pd.DataFrame) -> object:
        handed.append(([str(t) for t in data.dtypes], weakref.ref(data)))
        return gx_validator(data)

    monkeypatch.setattr(gx_runner, "gx_validator", recording)
    failed, errors = gx_results(frame, expectations)
    monkeypatch.undo()
    # Two validators: the range-checked narrow columns at 64 bits, then the data as it is.
    dtypes = [kinds for kinds, _ in handed]
    assert dtypes == [["float64", "int64", "int64", "float64"], ["float32", "int16", "uint8", "float64"]]
    gc.collect()
    assert handed[0][1]() is None  # the widened copy is not kept (GX keeps its last context alive)
    reference = run_gx(gx_validator(frame), expectations, {"result_format": "SUMMARY", "partial_unexpected_count": 20})
    assert not errors
    assert [index for index, _ in failed] == [k for k, result in sorted(reference.items()) if not result.success]
    assert [index for index, _ in failed] == [0, 1, 4]  # the type check still sees float32
    by_index = dict(failed)
    assert by_index[0]["partial_unexpected_list"] == reference[0].result["partial_unexpected_list"]
    assert by_index[0]["unexpected_count"] == 1
    assert by_index[1]["unexpected_count"] == 1
    # What GX is handed for the range checks: the narrow columns at 64 bits, the same values.
    widened = widened_numbers(frame, ["f32", "i16", "u8", "f64"])
    assert [str(t) for t in widened.dtypes] == ["float64", "int64", "int64", "float64"]
    assert widened["i16"].tolist() == frame["i16"].tolist()
    assert widened["f32"].equals(frame["f32"].astype("float64"))
