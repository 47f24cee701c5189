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
    ],
)
def test_infer_task(values, expected) -> None:
    assert infer_task(pd.Series(values)) == expected


def test_infer_columns_by_dtype() -> None:
    frame = pd.DataFrame(
        {
            "age": [1, 2, 3],
            "height": [1.5, None, 2.0],
            "smoker": [True, False, True],
            "city": ["a", "b", None],
            "grade": pd.Categorical(["x", "y", "x"]),
            "seen": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
        }
    )
    roles = infer_columns(frame)
    assert roles.numeric == ("age", "height", "smoker")
    assert roles.categorical == ("city", "grade")


def _spec(**extra):
    return parse_spec({"name": "t", "data": {"path": "x.csv", "target": "y"}, **extra}).for_task("binary")


def test_high_cardinality_text_does_not_explode() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id_like": [f"user-{i}" for i in range(2000)], "x": rng.normal(size=2000)})
    y = pd.Series(rng.integers(0, 2, 2000))
    model, _ = fit_pipeline(_spec(), frame, y)
    width = model.named_steps["preprocess"].transform(frame.head(5)).shape[1]
    assert width <= 32  # 1 numeric + at most 30 categories + the infrequent bucket
    assert model.predict(pd.DataFrame({"id_like": ["never-seen"], "x": [0.1]})).shape == (1,)


def test_linear_models_get_scaled_and_trees_do_not() -> None:
    roles = infer_columns(pd.DataFrame({"x": [1.0]}))
    linear = build_pipeline(_spec(model={"estimator": "sklearn.linear_model.LogisticRegression"}), roles)
    tree = build_pipeline(_spec(), roles)
    numeric_linear = linear.named_steps["preprocess"].transformers[0][1]
    numeric_tree = tree.named_steps["preprocess"].transformers[0][1]
    assert "scale" in numeric_linear.named_steps
    assert "scale" not in numeric_tree.named_steps


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
