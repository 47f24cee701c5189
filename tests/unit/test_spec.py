from pathlib import Path

import pytest

from conveyor.errors import SpecError
from conveyor.spec import load_spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


FIVE_LINES = """\
name: penguins
data:
  path: data/penguins.csv
  target: species
"""


def test_five_line_spec_gets_every_default(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, FIVE_LINES))
    assert spec.task is None
    assert spec.resolve_path(spec.data.path) == str(tmp_path / "data" / "penguins.csv")
    assert spec.contract_path == tmp_path / "penguins.expectations.json"
    binary = spec.for_task("binary")
    assert binary.primary_metric == "roc_auc"
    assert binary.estimator_path.endswith("HistGradientBoostingClassifier")
    assert spec.for_task("regression").primary_metric == "rmse"


def test_segments_take_one_column_or_several(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, FIVE_LINES + "segments: {by: island}\n")).segments.by == ("island",)
    spec = load_spec(write(tmp_path, FIVE_LINES + "segments: {by: [island, sex], min_rows: 50}\n"))
    assert spec.segments is not None and spec.segments.by == ("island", "sex") and spec.segments.min_rows == 50


def test_digest_ignores_where_the_spec_lies_but_not_its_content(tmp_path: Path) -> None:
    first = load_spec(write(tmp_path, FIVE_LINES))
    other = tmp_path / "elsewhere"
    other.mkdir()
    moved = load_spec(write(other, FIVE_LINES))
    changed = load_spec(write(other, FIVE_LINES + "evaluation: {margin: 0.01}\n"))
    assert first.digest() == moved.digest()
    assert first.digest() != changed.digest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (FIVE_LINES + "modle: {}\n", "unknown key 'modle'"),
        (FIVE_LINES.replace("  target: species\n", "  target: species\n  tagret: x\n"), "unknown key 'data.tagret'"),
        ("name: x\ndata: {path: a.csv}\n", "missing required key 'data.target'"),
        (FIVE_LINES + "evaluation: {margin: lots}\n", "'evaluation.margin'"),
        (FIVE_LINES + "model: {estimator: sklearn.nothing.Here}\n", "does not import"),
        (FIVE_LINES + "model: {estimator: sklearn.utils.Bunch}\n", "is not a scikit-learn estimator"),
        (FIVE_LINES + "model: {estimator: collections.OrderedDict}\n", "outside the allowed packages ['sklearn']"),
        (FIVE_LINES + "evaluation: {metric: accuracy_of_doom}\n", "unknown metric 'accuracy_of_doom'"),
        (FIVE_LINES + "task: regression\nevaluation: {metric: roc_auc}\n", "does not fit a regression task"),
        (FIVE_LINES + "evaluation: {floors: {rmse: 3}}\ntask: binary\n", "metric 'rmse' does not fit a binary task"),
        (FIVE_LINES + "governance: {risk_tier: high, approvers: [ana]}\n", "risk tier 'high' needs 2 different"),
        (FIVE_LINES + "governance: {risk_tier: medium}\n", "risk tier 'medium' needs 1 different"),
        (
            FIVE_LINES + "governance: {fairness: {metric: demographic_parity_difference, max: 0.1}}\n",
            "a fairness gate needs 'sensitive_attributes'",
        ),
        (
            FIVE_LINES + "governance: {sensitive_attributes: [sex], fairness: {metric: parity, max: 0.1}}\n",
            "unknown fairness metric 'parity'",
        ),
        (
            FIVE_LINES
            + "task: regression\ngovernance: {sensitive_attributes: [sex], "
            + "fairness: {metric: demographic_parity_difference, max: 0.1}}\n",
            "does not fit a regression task",
        ),
        (FIVE_LINES + "segments: {by: species}\n", "'segments.by' cannot be the target column 'species'"),
        (FIVE_LINES + "segments: {by: []}\n", "'by' names at least one column"),
        (FIVE_LINES + "serving: {canary: 1.5}\n", "'serving.canary'"),
        ("name: x\n  data: [\n", "YAML syntax error at line 2"),
        ("- just\n- a list\n", "must be a YAML mapping"),
    ],
)
def test_bad_spec_names_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert expected in message
    assert str(path.name) in message
    assert "\n" not in message


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def _bomb(levels: int = 9, width: int = 9) -> str:
    """The billion laughs in YAML: each level lists the previous one `width` times."""
    lines = ['      a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"      a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return FIVE_LINES + "model:\n  params:\n    bomb:\n" + "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    import resource
    import time

    path = write(tmp_path, _bomb())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert time.perf_counter() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: no 9**9 list built
    message = str(error.value)
    assert "model.yaml" in message and "aliases" in message and "\n" not in message


def test_a_spec_that_refers_to_itself_or_nests_too_deep_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="refers to itself"):
        load_spec(write(tmp_path, FIVE_LINES + "model:\n  params: &p {x: *p}\n"))
    with pytest.raises(SpecError, match="nested deeper than"):
        load_spec(write(tmp_path, FIVE_LINES + "description: " + "[" * 500 + "]" * 500 + "\n"))


def test_an_estimator_outside_the_allowed_packages_is_refused_before_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "this", raising=False)
    monkeypatch.delenv("CONVEYOR_ESTIMATOR_PACKAGES", raising=False)
    path = write(tmp_path, FIVE_LINES + "model: {estimator: this.s}\n")
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert "this" not in sys.modules  # refused from the path alone: nothing was imported
    assert "'model.estimator'" in str(error.value) and "CONVEYOR_ESTIMATOR_PACKAGES" in str(error.value)
    assert SpecError.exit_code == 2
    # A package the project allows is imported and checked like sklearn.
    monkeypatch.setenv("CONVEYOR_ESTIMATOR_PACKAGES", "collections")
    with pytest.raises(SpecError, match="is not a scikit-learn estimator"):
        load_spec(write(tmp_path, FIVE_LINES + "model: {estimator: collections.OrderedDict}\n"))


HGB = "sklearn.ensemble.HistGradientBoostingClassifier"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"estimator": HGB, "params": {"max_iter": "abc"}}, "The 'max_iter' parameter"),
        ({"estimator": HGB, "params": {"learning_rate": [0.1]}}, "The 'learning_rate' parameter"),
        ({"estimator": HGB, "params": {"max_iter": None}}, "The 'max_iter' parameter"),
        ({"estimator": HGB, "params": {"learning_rate": float("nan")}}, "The 'learning_rate' parameter"),
        ({"estimator": HGB, "params": {"max_itre": 10}}, "unknown parameter 'max_itre'"),
        ({"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 10**20}}, "n_estimators"),
        ({"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": "1e20"}}, "n_estimators"),
        ({"params": {"max_iter": -3}}, "The 'max_iter' parameter"),  # the default estimator, once the task is known
        ({"estimator": HGB, "search": {"params": {"max_depth": [3, "deep"]}}}, "The 'max_depth' parameter"),
    ],
)
def test_estimator_parameters_are_checked_at_load_not_in_fit(tmp_path: Path, model: dict, expected: str) -> None:
    import yaml

    path = write(tmp_path, FIVE_LINES + "task: binary\n" + yaml.safe_dump({"model": model}))
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert expected in message and "model" in message and "model.yaml" in message and "\n" not in message


def test_the_default_estimators_parameters_are_checked_when_the_task_is_settled(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, FIVE_LINES + "model: {params: {max_iter: 0}}\n"))
    with pytest.raises(SpecError, match="The 'max_iter' parameter") as error:
        spec.for_task("binary")
    assert "model.yaml" in str(error.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("x" * 260, "at most 64 characters"), ('a"b', "should match pattern"), ("../etc", "should match pattern")],
)
def test_a_name_too_long_or_with_odd_characters_is_refused(tmp_path: Path, name: str, expected: str) -> None:
    path = write(tmp_path, FIVE_LINES.replace("name: penguins", f"name: '{name}'"))
    with pytest.raises(SpecError, match=expected) as error:
        load_spec(path)
    assert "'name'" in str(error.value)


def test_a_spec_file_too_large_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, FIVE_LINES + "description: '" + "x" * 2_000_000 + "'\n")
    with pytest.raises(SpecError, match="above the 1 MB"):
        load_spec(path)
