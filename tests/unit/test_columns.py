import numpy as np
import pandas as pd
import pytest

from conveyor.spec import parse_spec
from tasks.data import infer_task, split_frame
from tasks.training import build_pipeline, fit_pipeline, infer_columns


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 1, 0], "binary"),
        (["yes", "no", "no"], "binary"),
        ([True, False, True], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([1, 2, 3, 2, 1], "multiclass"),
        ([1.0, 2.0, 3.0, 2.0], "multiclass"),
        (list(np.linspace(0, 1, 50)), "regression"),
        (list(range(100)), "regression"),
        ([0.5, 1.5, 2.25, 3.0], "regression"),
        ([60323, 61122, 60171, 61187, 63221, 63639, 64989, 63761], "regression"),  # counts, none repeated
        ([42, 37, 37, 28, 18, 18, 19, 20, 15, 14, 14, 13, 11, 12, 8, 7, 8, 8, 9, 15, 15], "regression"),
        ([1, 2, 3, 4, 5] * 4, "multiclass"),  # ratings: few values, each seen often
    ],
)
def test_infer_task(values, expected) -> None:
    assert infer_task(pd.Series(values)) == expected


def _spec(**extra):
    return parse_spec({"name": "t", "data": {"path": "x.csv", "target": "y"}, **extra}).for_task("binary")


def _preprocessed(spec, frame: pd.DataFrame) -> pd.DataFrame:
    """What the fitted pipeline's preprocessing hands the estimator, as a frame with its names."""
    model, _ = fit_pipeline(spec, frame, pd.Series([0, 1] * (len(frame) // 2)))
    preprocess = model.named_steps["preprocess"]
    return pd.DataFrame(preprocess.transform(frame), columns=preprocess.get_feature_names_out())


def test_numbers_and_booleans_pass_through_text_is_one_hot_and_dates_become_parts() -> None:
    frame = pd.DataFrame(
        {
            "age": [1, 2, 3, 4],
            "height": [1.5, None, 2.0, 3.0],
            "smoker": [True, False, True, True],
            "city": ["a", "b", None, "a"],
            "grade": pd.Categorical(["x", "y", "x", "x"]),
            "seen": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
        }
    )
    seen_by_model = _preprocessed(_spec(), frame)  # the default estimator is a tree: no scaling
    assert list(seen_by_model.columns) == [
        "age",
        "height",
        "smoker",
        "city___missing__",
        "city_a",
        "city_b",
        "grade_x",
        "grade_y",
        "seen_year",
        "seen_month",
        "seen_day",
        "seen_dayofweek",
    ]
    # 2024-01-01 was a Monday (0).
    assert seen_by_model[["seen_year", "seen_month", "seen_day", "seen_dayofweek"]].values.tolist() == [
        [2024, 1, day, day - 1] for day in (1, 2, 3, 4)
    ]
    assert seen_by_model["age"].tolist() == [1, 2, 3, 4]
    assert seen_by_model["height"].tolist() == [1.5, 2.0, 2.0, 3.0]  # the gap gets the median
    assert seen_by_model["smoker"].tolist() == [1, 0, 1, 1]
    assert seen_by_model[["city___missing__", "city_a", "city_b"]].values.tolist() == [
        [0, 1, 0],
        [0, 0, 1],
        [1, 0, 0],  # a missing value is a category of its own
        [0, 1, 0],
    ]
    assert seen_by_model[["grade_x", "grade_y"]].values.tolist() == [[1, 0], [0, 1], [1, 0], [1, 0]]


def test_high_cardinality_text_does_not_explode() -> None:
    from tasks.training import ONE_HOT_MAX_CATEGORIES

    rng = np.random.default_rng(0)
    rows = 3000
    frame = pd.DataFrame({"id_like": [f"user-{i}" for i in range(rows)], "x": rng.normal(size=rows)})
    # A second column whose 60 levels each hold 1-2 % of the rows: every one keeps a column.
    frame["grade"] = [f"g{i % 60:02d}" for i in range(rows)]
    y = pd.Series(rng.integers(0, 2, rows))
    model, _ = fit_pipeline(_spec(), frame, y)
    preprocess = model.named_steps["preprocess"]
    names = preprocess.get_feature_names_out().tolist()
    ids = [name for name in names if name.startswith("id_like_")]
    # The most frequent ids up to the cap keep a column; the rest, and any value never seen, share one.
    assert len(ids) == ONE_HOT_MAX_CATEGORIES and ids[-1] == "id_like_infrequent_sklearn"
    assert [name for name in names if name.startswith("grade_")] == [f"grade_g{i:02d}" for i in range(60)]
    unseen = pd.DataFrame({"id_like": ["never-seen"], "x": [0.1], "grade": ["g01"]})
    encoded = dict(zip(names, preprocess.transform(unseen)[0], strict=True))
    assert encoded["id_like_infrequent_sklearn"] == 1.0 and encoded["grade_g01"] == 1.0
    assert sum(encoded.values()) == pytest.approx(2.1)
    assert model.predict(unseen).shape == (1,)


def test_linear_models_get_scaled_and_trees_do_not() -> None:
    frame = pd.DataFrame({"x": [10.0, 20.0, 30.0, 40.0], "colour": ["a", "b", "a", "b"]})
    linear = _preprocessed(_spec(model={"estimator": "sklearn.linear_model.LogisticRegression"}), frame)
    tree = _preprocessed(_spec(), frame)
    assert linear["x"].mean() == pytest.approx(0.0)
    assert linear["x"].std(ddof=0) == pytest.approx(1.0)
    assert tree["x"].tolist() == [10.0, 20.0, 30.0, 40.0]
    # One-hot columns are never scaled, for either.
    assert linear["colour_a"].tolist() == tree["colour_a"].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_split_is_deterministic_and_time_ordered() -> None:
    frame = pd.DataFrame({"t": range(100, 0, -1), "x": range(100), "y": [0, 1] * 50})
    spec = _spec()
    first, second = split_frame(spec, frame), split_frame(spec, frame)
    assert list(first.X_test.index) == list(second.X_test.index)
    timed = _spec(data={"path": "x.csv", "target": "y", "split": {"time_column": "t", "test_size": 0.2}})
    split = split_frame(timed, frame)
    assert "t" not in split.X_train.columns
    assert frame.loc[split.X_test.index, "t"].min() > frame.loc[split.X_train.index, "t"].max()


def test_estimator_that_does_not_fit_the_task_is_refused() -> None:
    from conveyor.errors import SpecError

    spec = _spec(model={"estimator": "sklearn.linear_model.Ridge"})
    with pytest.raises(SpecError, match="does not fit a binary task"):
        build_pipeline(spec, infer_columns(pd.DataFrame({"x": [1.0]})))


def _five_line(**data):
    return parse_spec({"name": "t", "data": {"path": "x.csv", "target": "y", **data}}).for_task("binary")


def test_row_names_and_row_numbers_are_left_out_of_the_features_with_a_note(tmp_path) -> None:
    from tasks.data import feature_frame, id_columns_note, id_like_columns, read_file

    # What R's write.csv writes: an empty first header, then row names; sorted by the target.
    path = tmp_path / "r.csv"
    lines = ['"","x","code","customerId","y"'] + [f'"{i}",{i % 7},{100 + i},c{i},{int(i > 30)}' for i in range(1, 61)]
    path.write_text("\n".join(lines) + "\n")
    frame = read_file(str(path), 10)
    found = id_like_columns(_five_line(), frame)
    assert set(found) == {"Unnamed: 0", "customerId"}
    assert "row names" in found["Unnamed: 0"]
    assert list(feature_frame(_five_line(), frame).columns) == ["x", "code"]
    note = id_columns_note(found)
    assert note is not None and "'Unnamed: 0'" in note and "\n" not in note


@pytest.mark.parametrize(
    ("column", "values", "is_id"),
    [
        ("rownames", ["Mazda RX4", "Datsun 710", "Valiant"], True),
        ("n", [0, 1, 2], True),
        ("n", [3, 2, 1], True),
        ("year", [1947, 1948, 1949], False),  # consecutive but not a row counter: a real feature
        ("n", [1, 3, 2], False),
        ("row_id", ["a", "b", "c"], True),
        ("ID", [10, 30, 20], True),
        ("paid", [10, 30, 20], False),
        ("user_id", [1, 1, 2], False),  # repeats: a grouping key, not a row id
        ("score_idx", [0.5, 0.1, 0.2], False),
    ],
)
def test_what_counts_as_an_id(column: str, values: list, is_id: bool) -> None:
    from tasks.data import id_like_columns

    frame = pd.DataFrame({column: values, "y": [0, 1, 0]})
    assert (column in id_like_columns(_five_line(), frame)) is is_id


def test_a_declared_id_column_or_the_switch_turns_detection_off() -> None:
    from tasks.data import feature_frame, id_like_columns

    frame = pd.DataFrame({"Unnamed: 0": [1, 2, 3], "key": ["a", "b", "c"], "x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    assert id_like_columns(_five_line(id_column="key"), frame) == {}
    assert list(feature_frame(_five_line(id_column="key"), frame).columns) == ["Unnamed: 0", "x"]
    kept = _five_line(detect_id_columns=False)
    assert list(feature_frame(kept, frame).columns) == ["Unnamed: 0", "key", "x"]


def test_dates_become_year_month_day_and_weekday_inside_the_pipeline(tmp_path) -> None:
    from tasks.data import read_file
    from tasks.training import DateParts

    # pyarrow reads ISO dates as datetime.date objects, ISO times as datetime64, offsets as UTC.
    path = tmp_path / "dates.csv"
    path.write_text(
        "day,at,zoned,x,y\n"
        "1970-01-01,2024-01-02 10:00:00,2024-01-02T10:00:00+02:00,1,0\n"
        "1971-05-03,2024-02-03 11:30:00,2024-02-03T23:30:00Z,2,1\n"
        ",,,3,0\n"
    )
    frame = read_file(str(path), 10)
    roles = infer_columns(frame.drop(columns="y"))
    assert roles.dates == ("day", "at", "zoned") and roles.numeric == ("x",)
    parts = DateParts().fit(frame[["day", "at", "zoned"]])
    names = list(parts.get_feature_names_out())
    assert names[:4] == ["day_year", "day_month", "day_day", "day_dayofweek"]
    assert "at_hour" in names and "day_hour" not in names
    out = pd.DataFrame(parts.transform(frame[["day", "at", "zoned"]]), columns=names)
    # 1971-05-03 was a Monday (0); 2024-02-03 23:30 UTC stays the 3rd, a Saturday (5).
    assert out.loc[1, ["day_year", "day_month", "day_day", "day_dayofweek"]].tolist() == [1971, 5, 3, 0]
    assert out.loc[0, "zoned_hour"] == 8  # 10:00 at +02:00 is 08:00 UTC
    assert out.loc[1, "zoned_dayofweek"] == 5
    assert out.iloc[2].isna().all()
    # Serving sends the same column as ISO text: the same numbers come out.
    as_text = frame[["day", "at", "zoned"]].astype(str).where(frame[["day", "at", "zoned"]].notna())
    assert np.allclose(parts.transform(as_text)[:2], out.to_numpy()[:2])


def test_a_date_feature_trains_and_predicts_from_text() -> None:
    rng = np.random.default_rng(3)
    days = pd.Series(pd.date_range("2020-01-01", periods=400, freq="D").date)
    frame = pd.DataFrame({"day": days, "x": rng.normal(size=400)})
    y = pd.Series((pd.to_datetime(days).dt.dayofweek >= 5).astype(int))  # weekends
    model, _ = fit_pipeline(_spec(), frame, y)
    assert model.score(frame, y) > 0.95
    assert model.predict(pd.DataFrame({"day": ["2026-11-28"], "x": [0.0]})).tolist() == [1]  # a Saturday
