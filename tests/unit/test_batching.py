"""Dynamic batching on a real fitted scikit-learn model: requests that arrive together are scored by
one predict call, each gets exactly its own rows' answer, and a request the model refuses fails alone."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from app.serving.batching import Batcher
from app.serving.fleet import CHAMPION, Loaded
from app.serving.payload import Contract
from conveyor.spec import PipelineSpec
from tasks.scoring import ServingModel


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    y = np.where(X["x1"] - 0.5 * X["x2"] + rng.normal(scale=0.3, size=300) > 0, "yes", "no")
    fitted = LogisticRegression().fit(X, y)
    model = ServingModel("churn", "1", CHAMPION, "binary", ("x1", "x2"), (), tuple(fitted.classes_), fitted)
    spec = PipelineSpec.model_validate({"name": "churn", "data": {"path": "x.csv", "target": "label"}})
    return Loaded("churn", "1", CHAMPION, Contract(spec, model, None), time.time(), 1.0, 0.0)


def frames(count: int, seed: int = 7) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    return [pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.normal(size=n)}) for n in rng.integers(1, 4, count)]


def test_requests_that_arrive_together_are_one_predict_and_each_gets_its_own_rows(loaded: Loaded) -> None:
    batcher = Batcher()
    requests = frames(12)

    async def together() -> list[dict]:
        return await asyncio.gather(*(batcher.predict(loaded, frame) for frame in requests))

    answers = asyncio.run(together())
    assert (batcher.batches, batcher.requests) == (1, 12)
    for frame, answer in zip(requests, answers, strict=True):
        alone = loaded.predict(frame)
        assert set(answer) == set(alone) and answer["prediction"].to_pylist() == alone["prediction"].to_pylist()
        for name in ("proba_no", "proba_yes"):
            np.testing.assert_allclose(answer[name].to_numpy(), alone[name].to_numpy(), rtol=1e-12)


def test_a_request_alone_is_scored_at_once_and_a_full_batch_is_split(loaded: Loaded) -> None:
    batcher = Batcher(max_rows=5)
    one = frames(1)[0]
    assert (
        asyncio.run(batcher.predict(loaded, one))["prediction"].to_pylist()
        == loaded.predict(one)["prediction"].to_pylist()
    )
    assert batcher.batches == 1

    async def many() -> list[dict]:
        single = [f.head(1) for f in frames(12, seed=9)]
        return await asyncio.gather(*(batcher.predict(loaded, frame) for frame in single))

    answers = asyncio.run(many())
    assert len(answers) == 12 and all(len(a["prediction"]) == 1 for a in answers)
    assert batcher.batches == 1 + 3  # 12 single rows in batches of at most 5


def test_a_request_the_model_refuses_fails_alone(loaded: Loaded) -> None:
    batcher = Batcher()
    good = frames(3)
    bad = pd.DataFrame({"x1": ["not a number"], "x2": [0.5]})

    async def mixed() -> list[object]:
        calls = [batcher.predict(loaded, good[0]), batcher.predict(loaded, bad), batcher.predict(loaded, good[1])]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, refused, last = asyncio.run(mixed())
    assert isinstance(refused, ValueError)
    assert isinstance(first, dict) and len(first["prediction"]) == len(good[0])
    assert (
        isinstance(last, dict) and last["prediction"].to_pylist() == loaded.predict(good[1])["prediction"].to_pylist()
    )
