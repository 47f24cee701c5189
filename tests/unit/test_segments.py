"""Segment naming, splitting and routing, on tiny frames (no MLflow, no Prefect)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from conveyor import registry
from tasks.segments import SegmentRouter, frame_digest, segment_key, segment_model_name


@pytest.mark.parametrize("value", ["3", 3, 3.0, "a b", "a_b", "Zürich", "", "x/y'z"])
def test_a_segment_model_name_is_a_valid_model_name(value: object) -> None:
    name = segment_model_name("sales", ["store"], [value])
    assert registry.model_name(name) == name
    assert name == segment_model_name("sales", ["store"], [value])  # stable


def test_values_that_slug_alike_keep_distinct_names() -> None:
    names = {segment_model_name("sales", ["store"], [v]) for v in ["a b", "a_b", "a-b", "a.b"]}
    assert len(names) == 4
    assert segment_model_name("sales", ["store"], [3]) == segment_model_name("sales", ["store"], [3.0])
    assert segment_key([3]) == segment_key(["3"]) == segment_key([np.float64(3.0)])


def test_a_frame_digest_follows_its_rows() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "s": ["a", "b"]})
    assert frame_digest(frame) == frame_digest(frame.copy())
    assert frame_digest(frame) != frame_digest(frame.assign(x=[1.0, 2.5]))


def _constant(label: str, classes: list[str]) -> DummyClassifier:
    X = pd.DataFrame({"x": np.zeros(len(classes))})
    return DummyClassifier(strategy="constant", constant=label).fit(X, classes)


def test_the_router_sends_each_row_to_its_segment_and_the_rest_to_the_fallback() -> None:
    models = {
        "m.store-a": _constant("yes", ["no", "yes"]),
        "m.store-b": _constant("only", ["only"]),  # a segment that saw one class of three
        "m.all_rows": _constant("no", ["no", "only", "yes"]),
    }
    routes = {
        "by": ["store"],
        "task": "multiclass",
        "classes": ["no", "only", "yes"],
        "features": ["store", "x"],
        "fallback": {"model": "m.all_rows", "version": "1", "digest": "d", "label": "all rows"},
        "segments": {
            segment_key(["a"]): {"model": "m.store-a", "version": "2", "digest": "d", "label": "store=a"},
            segment_key(["b"]): {"model": "m.store-b", "version": "1", "digest": "d", "label": "store=b"},
        },
    }
    loaded: list[str] = []

    def load(model: str, version: str, digest: str) -> DummyClassifier:
        loaded.append(model)
        return models[model]

    router = SegmentRouter(routes, load)
    frame = pd.DataFrame({"store": ["b", "a", "zz", "a"], "x": [0.0, 1.0, 2.0, 3.0]})
    assert list(router.predict(frame)) == ["only", "yes", "no", "yes"]
    proba = router.predict_proba(frame)
    np.testing.assert_allclose(proba[0], [0, 1, 0])  # store b's one class lands in its own column
    assert list(router.served_by(frame)) == ["m.store-b v1", "m.store-a v2", "m.all_rows v1", "m.store-a v2"]
    assert sorted(set(loaded)) == sorted(models) and len(loaded) == 3  # each model loaded once
