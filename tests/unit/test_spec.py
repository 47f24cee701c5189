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
        (FIVE_LINES + "model: {estimator: collections.OrderedDict}\n", "is not a scikit-learn estimator"),
        (FIVE_LINES + "evaluation: {metric: accuracy_of_doom}\n", "unknown metric 'accuracy_of_doom'"),
        (FIVE_LINES + "task: regression\nevaluation: {metric: roc_auc}\n", "does not fit a regression task"),
        (FIVE_LINES + "evaluation: {floors: {rmse: 3}}\ntask: binary\n", "metric 'rmse' does not fit a binary task"),
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
