"""The lineage key changes when anything that can change the registered model changes, and only then."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conveyor import lineage
from conveyor.spec import parse_spec
from tasks.lineage import contract_file_digest
from tasks.training import build_pipeline, infer_columns

REPO = Path(__file__).resolve().parents[2]


def spec(**overrides: object):
    raw = {"name": "m", "data": {"path": "x.csv", "target": "y"}, **overrides}
    return parse_spec(raw, "/tmp/pipelines/m.yaml")


def test_each_input_moves_the_key_and_nothing_else_does() -> None:
    base = lineage.Lineage("d", "s", "c", "code", "rev")
    assert base.key == lineage.Lineage("d", "s", "c", "code", "other-revision").key  # a revision is a label
    for changed in (
        lineage.Lineage("d2", "s", "c", "code", "rev"),
        lineage.Lineage("d", "s2", "c", "code", "rev"),
        lineage.Lineage("d", "s", "c2", "code", "rev"),
        lineage.Lineage("d", "s", "c", "code2", "rev"),
    ):
        assert changed.key != base.key


def test_spec_digest_covers_a_declared_task_and_ignores_where_the_file_lies() -> None:
    assert spec().digest() != spec(task="multiclass").digest()
    moved = parse_spec({"name": "m", "data": {"path": "x.csv", "target": "y"}}, "/elsewhere/m.yaml")
    assert spec().digest() == moved.digest()
    assert spec().digest() != spec(model={"params": {"max_iter": 50}}).digest()


def test_code_digest_covers_every_module_that_shapes_the_registered_model() -> None:
    files = {path.relative_to(REPO).as_posix() for path in lineage._code_files(REPO)}
    for module in (
        "conveyor/registry.py",
        "conveyor/lineage.py",
        "conveyor/spec.py",
        "tasks/registry.py",
        "tasks/packaging.py",
        "tasks/training.py",
        "tasks/evaluation.py",
        "tasks/data.py",
        "flows/training.py",
    ):
        assert module in files, module
    assert any(name.startswith("tasks/drift/") for name in files)
    assert any(name.startswith("tasks/contracts/") for name in files)
    assert not any(name.startswith("app/") for name in files)


def test_runtime_part_names_pyarrow_and_python(monkeypatch: pytest.MonkeyPatch) -> None:
    pins = lineage.pinned_requirements()
    assert any(pin.startswith("pyarrow==") for pin in pins)
    assert any(pin.startswith("scikit-learn==") for pin in pins)
    before = lineage.code_digest()
    lineage.code_digest.cache_clear()
    monkeypatch.setattr(sys, "version_info", (3, 99, 0, "final", 0))
    try:
        assert lineage.code_digest() != before
    finally:
        monkeypatch.undo()
        lineage.code_digest.cache_clear()
    assert lineage.code_digest() == before


def test_contract_digest_follows_the_file_content(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    model = parse_spec({"name": "m", "data": {"path": "x.csv", "target": "y"}}, str(pipelines / "m.yaml"))
    assert contract_file_digest(model) is None
    suite = (
        '{"name": "m", "expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]}'
    )
    model.contract_path.write_text(suite)
    first = contract_file_digest(model)
    model.contract_path.write_text(suite.replace('"min_value": 1', '"min_value": 2'))
    assert contract_file_digest(model) not in (None, first)
    model.contract_path.write_text(suite)
    assert contract_file_digest(model) == first


def test_estimators_are_seeded_from_the_spec_unless_it_sets_one() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    roles = infer_columns(frame)
    seeded = build_pipeline(spec(task="binary", data={"path": "x.csv", "target": "y", "split": {"seed": 7}}), roles)
    assert seeded.named_steps["model"].random_state == 7
    explicit = build_pipeline(spec(task="binary", model={"params": {"random_state": 3}}), roles)
    assert explicit.named_steps["model"].random_state == 3
    # An estimator without a random_state takes none.
    linear = build_pipeline(
        spec(task="regression", model={"estimator": "sklearn.linear_model.LinearRegression"}), roles
    )
    assert "random_state" not in linear.named_steps["model"].get_params()
