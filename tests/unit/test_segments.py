"""Segment naming, splitting and routing, on tiny frames (no MLflow, no Prefect)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from conveyor import registry
from conveyor.spec import PipelineSpec, load_spec
from tasks.segments import SegmentRouter, frame_digest, plan_segments, segment_key, segment_model_name


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


def _sales(tmp_path: Path, segments: str) -> PipelineSpec:
    path = tmp_path / "sales.yaml"
    path.write_text(f"name: sales\ndata: {{path: data.csv, target: label}}\nsegments: {segments}\n")
    return load_spec(path)


def test_the_all_rows_model_trains_on_a_fixed_sample_above_its_row_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "store": np.repeat(["a", "b", "c"], [700, 500, 40]),
            "x": rng.normal(size=1240),
            "label": rng.choice(["no", "yes"], size=1240),
        }
    )
    plan = plan_segments(_sales(tmp_path, "{by: store, min_rows: 100, fallback_rows: 1000}"), frame)
    fallback, *segments = plan.jobs
    assert fallback.key is None and len(fallback.frame) == 1000 and fallback.source_rows == 1240
    assert fallback.frame.index.is_monotonic_increasing  # the rows keep their order (time splits)
    assert set(fallback.frame["store"]) == {"a", "b", "c"}
    # The same rows every time, and the digest is every row's: a change anywhere retrains it.
    again = plan_segments(_sales(tmp_path, "{by: store, min_rows: 100, fallback_rows: 1000}"), frame).jobs[0]
    assert again.frame.index.equals(fallback.frame.index)
    assert fallback.digest == frame_digest(frame)
    # The segments keep all their rows; under the cap nothing is sampled.
    assert [len(job.frame) for job in segments] == [700, 500] and plan.small == {"store=c": 40}
    whole = plan_segments(_sales(tmp_path, "{by: store, min_rows: 100}"), frame).jobs[0]
    assert len(whole.frame) == whole.source_rows == 1240


def _pending(tmp_path: Path, stores: int) -> list[tuple[Any, None]]:
    frame = pd.DataFrame({"store": np.repeat([f"s{i:04d}" for i in range(stores)], 10), "x": 0.0, "label": "no"})
    plan = plan_segments(_sales(tmp_path, "{by: store, min_rows: 5}"), frame)
    return [(job, None) for job in plan.jobs]


def test_segments_are_one_per_task_on_threads_and_batched_on_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.segments import batch_label, batches

    pending = _pending(tmp_path, 20)
    assert batches(pending, ThreadPoolTaskRunner(max_workers=2)) == [[item] for item in pending]
    monkeypatch.setenv("CONVEYOR_WORKERS", "2")
    batched = batches(pending, DaskTaskRunner())  # not started: CONVEYOR_WORKERS sizes the batches
    assert batched[0] == [pending[0]] and batch_label(batched[0]) == "all rows"
    assert [len(batch) for batch in batched[1:]] == [3] * 6 + [2]  # 20 segments, about 4 tasks per worker
    assert [item for batch in batched for item in batch] == pending  # each once, in order
    assert batch_label(batched[1]) == "store=s0000..store=s0002 (3)"
    # A large fleet: batches of at most 25, so the two workers finish within a batch of each other.
    many = _pending(tmp_path, 1000)
    large = batches(many, DaskTaskRunner())
    assert [len(batch) for batch in large] == [1] + [25] * 40
    assert [item for batch in large for item in batch] == many
    # A started runner's cluster says how many workers it has (a named cluster may have many
    # more than this machine's cores): 3 workers, about 4 tasks each, whatever CONVEYOR_WORKERS says.
    monkeypatch.setenv("CONVEYOR_WORKERS", "1")
    cluster = {"n_workers": 3, "processes": False, "threads_per_worker": 1, "dashboard_address": None}
    with DaskTaskRunner(cluster_kwargs=cluster) as started:
        on_cluster = batches(pending, started)
    assert [len(batch) for batch in on_cluster[1:]] == [2] * 10


@pytest.mark.parametrize(
    ("env", "tasks", "workers", "expected"),
    [
        ({}, 100, "2", True),  # unasked, many models, two workers: a cluster
        ({}, 99, "2", False),  # too few to repay its start
        ({}, 500, "1", False),  # one worker: nothing to gain from processes
        ({"CONVEYOR_DASK": "0"}, 500, "2", False),  # threads kept on request
        ({"CONVEYOR_DASK": "1"}, 500, "2", False),  # asked for: started at the flow's start instead
        ({"CONVEYOR_DASK_ADDRESS": "tcp://127.0.0.1:8786"}, 500, "2", False),  # a named cluster serves
    ],
)
def test_a_large_fan_out_gets_a_local_cluster_unasked(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tasks: int, workers: str, expected: bool
) -> None:
    from conveyor import orchestration

    for key in ("CONVEYOR_DASK", "CONVEYOR_DASK_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONVEYOR_WORKERS", workers)
    assert orchestration.AUTO_DASK_TASKS == 100
    assert orchestration.auto_local_cluster(tasks) is expected
