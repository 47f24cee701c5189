"""Packaging dumps a model once and reuses skops's type audit per schema signature: the reused list
must be the one skops itself finds, whatever was packaged before, and a foreign type still shows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skops.io
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from conveyor import artifacts
from conveyor.spec import parse_spec
from tasks.training import fit_pipeline
from tests.factories import classification_frame


def fitted(estimator: str) -> object:
    frame = classification_frame(rows=120, seed=1)
    X, y = frame.drop(columns=["label", "row_id"]), frame["label"]
    raw = {"name": "m", "data": {"path": "x.csv", "target": "label"}, "model": {"estimator": estimator}}
    spec = parse_spec(raw, "/tmp/pipelines/m.yaml").for_task("binary")
    return fit_pipeline(spec, X, y)[0]


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    artifacts._TRUSTED.clear()


def test_each_pipeline_gets_the_types_skops_finds_in_its_own_dump() -> None:
    models = [
        fitted("sklearn.ensemble.HistGradientBoostingClassifier"),
        fitted("sklearn.linear_model.LogisticRegression"),  # after a boosted model was audited
        fitted("sklearn.ensemble.HistGradientBoostingClassifier"),  # from the cache
    ]
    for model in models:
        data, trusted = artifacts.skops_dump(model)
        assert trusted == skops.io.get_untrusted_types(data=data)
        assert skops.io.loads(data, trusted=trusted).get_params().keys() == model.get_params().keys()  # type: ignore[attr-defined]
    assert len(artifacts._TRUSTED) == 2


def test_a_foreign_function_is_found_after_a_same_shaped_model_was_cached() -> None:
    X = np.arange(12, dtype=float).reshape(6, 2)
    allowed = make_pipeline(FunctionTransformer(np.log1p)).fit(X)
    foreign = make_pipeline(FunctionTransformer(math.sqrt)).fit(X)
    artifacts.skops_dump(allowed)
    _, trusted = artifacts.skops_dump(foreign)
    assert "math.sqrt" in trusted
    assert artifacts.disallowed_types(trusted) == ["math.sqrt"]
