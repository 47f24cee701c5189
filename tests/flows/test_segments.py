"""Segment models from one spec, under the Prefect test harness, against a real SQLite MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from conveyor import registry, settings
from flows.monitoring import monitoring_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from tests.factories import copy_project, project_home, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")

REPO = Path(__file__).resolve().parents[2]
SEGMENTS = {"segments": {"by": "store", "min_rows": 200}, "evaluation": {"floors": {"roc_auc": 0.7}}}
# Opposite signal in stores a/c and b/d: one model for all of them could not fit both.
SIGNS = {"a": 1.0, "b": -1.0, "c": 1.0, "d": -1.0}


def store_frame(store: str, rows: int, seed: int, sign: float, first_id: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    signal = sign * (1.5 * x1 - x2) + rng.normal(scale=0.3, size=rows)
    return pd.DataFrame(
        {
            "row_id": np.arange(first_id, first_id + rows),
            "store": store,
            "x1": x1.round(4),
            "x2": x2.round(4),
            "label": np.where(signal > 0, "yes", "no"),
        }
    )


def first_data() -> pd.DataFrame:
    frames = [store_frame(s, 300, i, sign, 1000 * i) for i, (s, sign) in enumerate(SIGNS.items())]
    frames.append(store_frame("e", 40, 9, 1.0, 9000))  # under min_rows: the all-rows model serves it
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def segmented_template(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One first training run of the segmented `churn`, made once for the module."""
    with project_home(tmp_path_factory.mktemp("segmented")) as root:
        write_csv(root, "data/train.csv", first_data())
        spec = write_spec(root, "churn", "../data/train.csv", **SEGMENTS)
        return root, training_flow(spec=str(spec))


@pytest.fixture
def segmented(project: Path, segmented_template: tuple[Path, dict]) -> dict:
    template, result = segmented_template
    copy_project(template, project)
    return dict(result)


def champion(name: str) -> str | None:
    found = registry.alias_version(name, registry.CHAMPION)
    return None if found is None else str(found.version)


def all_versions(prefix: str) -> dict[str, int]:
    models = registry.client().search_registered_models(f"name LIKE '{prefix}%'")
    return {m.name: len(registry.list_versions(m.name)) for m in models}


def test_each_segment_gets_its_own_model_and_the_router_serves_them(project: Path, segmented: dict) -> None:
    assert segmented["outcome"] == "promoted"
    for store in SIGNS:
        assert champion(f"churn.store-{store}") == "1"
    assert champion("churn.all_rows") == "1"
    assert registry.model_tag("churn.store-e", "conveyor.managed") is None  # too small: no model of its own
    router = registry.alias_version("churn", registry.CHAMPION)
    assert router is not None and router.tags["conveyor.kind"] == "segment-router"
    # Opposite signal gives opposite models: the same row scores high in store a, low in store b.
    row = pd.DataFrame({"x1": [2.0], "x2": [0.0]})
    proba_a = registry.load_model("churn.store-a", "1").predict_proba(row)[0]
    proba_b = registry.load_model("churn.store-b", "1").predict_proba(row)[0]
    assert proba_a[1] > 0.8 and proba_b[1] < 0.2  # classes ["no", "yes"]
    # The online server loads the router and says how many segment models it routes to.
    from app.serving.fleet import Fleet, ModelState

    fleet = Fleet(names=["churn"])
    fleet.states["churn"] = ModelState(aliases={registry.CHAMPION: router.version})
    fleet.ensure("churn")
    (described,) = fleet.describe()
    assert described["segmented"] and described["segments"] == len(SIGNS)


def test_scoring_routes_every_row_and_the_champion_uri_agrees_in_a_fresh_process(
    project: Path, segmented: dict
) -> None:
    mixed = pd.concat(
        [store_frame(s, 60, 50 + i, 1.0, 50_000 + 100 * i) for i, s in enumerate(["a", "b", "c", "d", "e", "zz"])],
        ignore_index=True,
    ).drop(columns=["label"])
    drifted = mixed["store"] == "a"  # store a's inputs drift (inside the contract's range); the others' do not
    mixed.loc[drifted, "x1"] = np.random.default_rng(5).uniform(2.0, 3.5, size=int(drifted.sum())).round(4)
    source = write_csv(project, "data/mixed.csv", mixed)
    output = project / "out.csv"
    summary = scoring_flow(model="churn", input_path=str(source), output_path=str(output))
    assert summary["rows"] == len(mixed)
    scored = pd.read_csv(output)
    expected = {s: f"churn.store-{s} v1" for s in SIGNS} | {"e": "churn.all_rows v1", "zz": "churn.all_rows v1"}
    assert list(scored["served_by"]) == [expected[s] for s in mixed["store"]]
    # The prediction log names the segment and the model that served each row.
    from conveyor import predictions

    logged = predictions.read("churn", None)
    assert set(logged["store"]) == set(mixed["store"]) and "served_by" in logged.columns

    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/churn@champion')\n"
        "out = model.predict(pd.read_csv(sys.argv[1]))\n"
        "print(json.dumps({'p': out['proba_yes'].tolist(), 'by': out['served_by'].tolist()}))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri(), "CONVEYOR_HOME": str(project)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(source)], env=env, capture_output=True, text=True, cwd=REPO, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh["by"] == list(scored["served_by"])
    np.testing.assert_allclose(fresh["p"], scored["proba_yes"], rtol=1e-9)

    # Monitoring per segment: each segment model against its own profile, events naming the segment.
    report = monitoring_flow(model="churn", since_hours=None)
    health = {h["segment"]: h for h in report["segments"]}
    assert health["store=a"]["drift_detected"] is True and "x1" in health["store=a"]["drifted_features"]
    assert health["store=a"]["events"] == ["conveyor.drift.detected"]
    assert health["store=c"]["drift_detected"] is False and health["store=c"]["events"] == []
    assert health["all rows"]["rows"] == 120  # stores e (small) and zz (unknown)


def test_an_unchanged_rerun_trains_nothing(project: Path, segmented: dict) -> None:
    before = all_versions("churn")
    again = training_flow(spec=str(project / "pipelines" / "churn.yaml"))
    assert again["reused"] and again["version"] == segmented["version"]
    assert all_versions("churn") == before


def test_each_segment_is_gated_on_its_own_holdout(
    project: Path, segmented: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    data = first_data()
    rng = np.random.default_rng(7)
    worse = data["store"] == "a"  # labels shuffled: its challenger falls under the floor
    data.loc[worse, "label"] = rng.permutation(data.loc[worse, "label"].to_numpy())
    data = data[data["store"] != "b"]  # store b's rule flips: its old champion is wrong now
    data = data[data["store"] != "d"]  # store d vanishes: it keeps serving, reported stale
    flipped = store_frame("b", 300, 21, 1.0, 21_000)
    new = store_frame("f", 300, 22, 1.0, 22_000)  # a segment that appears
    write_csv(project, "data/train.csv", pd.concat([data, flipped, new], ignore_index=True))

    result = training_flow(spec=str(project / "pipelines" / "churn.yaml"))

    assert champion("churn.store-a") == "1"
    a2 = registry.get_version("churn.store-a", "2")
    assert a2.tags["conveyor.decision"] == "rejected" and "floor" in a2.tags["conveyor.decision_reason"]
    assert champion("churn.store-b") == "2"
    assert registry.get_version("churn.store-b", "2").tags["conveyor.decision"] == "promoted"
    assert champion("churn.store-f") == "1"
    assert len(registry.list_versions("churn.store-c")) == 1  # its rows did not change: not retrained
    assert champion("churn.store-d") == "1"
    assert "stale" in result["reason"] and "store=d" in result["reason"]
    assert result["outcome"] == "promoted" and champion("churn") == "2"
    from tasks.segments import load_routes

    routes = load_routes("churn", "2")["segments"]
    pins = {route["label"]: (route["version"], route["stale"]) for route in routes.values()}
    assert pins == {
        "store=a": ("1", False),
        "store=b": ("2", False),
        "store=c": ("1", False),
        "store=d": ("1", True),
        "store=f": ("1", False),
    }

    # `conveyor show` lists the segments: champion version, metric, last decision, age, stale.
    from app.commands_models import show

    capsys.readouterr()
    show("churn")
    shown = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("store=")}
    assert "v1" in shown["store=a"] and "v2 rejected" in shown["store=a"] and "roc_auc" in shown["store=a"]
    assert "v2 promoted" in shown["store=b"] and "stale" in shown["store=d"] and "stale" not in shown["store=c"]


def test_a_segment_model_is_guarded_by_its_specs_lock(project: Path, segmented: dict) -> None:
    """The segment flow holds one lock, its spec's, over the whole fan-out: a rollback of one
    segment model waits for that lock, not for a lock of its own."""
    import threading

    from conveyor.errors import RegistryError
    from tasks.rollback import rollback

    assert registry.lock_subject("churn.store-a") == "churn"
    assert registry.lock_subject("churn.all_rows") == "churn"
    assert registry.lock_subject("churn") == "churn"

    outcome: list[BaseException] = []

    def roll() -> None:
        try:
            rollback("churn.store-a", "ana", "checking the lock")
        except BaseException as exc:  # v1 has no previous champion: refused, once it has the lock
            outcome.append(exc)

    with registry.promotion_lock("churn"):
        waiter = threading.Thread(target=roll)
        waiter.start()
        waiter.join(2.0)
        assert waiter.is_alive(), "the rollback did not wait for the spec's lock"
    waiter.join(60)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RegistryError) and "no previous champion" in str(outcome[0])


@pytest.mark.timeout(1200)  # a lost cluster must fail the test, not hang the suite
@pytest.mark.parametrize("how", ["asked-for", "many-models", "cluster-cannot-start"])
def test_segments_train_in_batches_on_a_dask_local_cluster(
    project: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Dask worker processes train the segments in batches (one batch of two stores per worker
    here), the all-rows model in a task of its own and on a fixed sample above `fallback_rows`:
    with CONVEYOR_DASK=1, or unasked once the models to train reach `AUTO_DASK_TASKS` (lowered to
    this data's five here). Unasked, a cluster that cannot start (a Dask setting no
    multiprocessing context has) leaves the models to the threads, one task each."""
    import dask

    import flows.segments
    from conveyor import orchestration

    if how == "asked-for":
        monkeypatch.setenv("CONVEYOR_DASK", "1")
    else:
        monkeypatch.delenv("CONVEYOR_DASK", raising=False)
        monkeypatch.setattr(orchestration, "AUTO_DASK_TASKS", 1 + len(SIGNS))
    broken = {"distributed.worker.multiprocessing-method": "no-such-method"} if how == "cluster-cannot-start" else {}
    monkeypatch.setenv("CONVEYOR_WORKERS", "2")
    monkeypatch.setattr(flows.segments, "TASKS_PER_WORKER", 1)
    write_csv(project, "data/train.csv", first_data())
    segments = {**SEGMENTS, "segments": {**SEGMENTS["segments"], "fallback_rows": 1000}}
    with dask.config.set(broken):
        result = training_flow(spec=str(write_spec(project, "churn", "../data/train.csv", **segments)))

    assert result["outcome"] == "promoted" and champion("churn") == "1"
    assert {store: champion(f"churn.store-{store}") for store in SIGNS} == dict.fromkeys(SIGNS, "1")
    fallback = registry.alias_version("churn.all_rows", registry.CHAMPION)
    assert fallback is not None
    run = registry.client().get_run(fallback.run_id)
    assert run.data.params["rows"] == "1000" and run.data.params["sampled_from"] == str(len(first_data()))
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = run.data.tags["conveyor.prefect_flow_run_id"]
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    trained = sorted(t.name for t in task_runs if t.name.startswith("train-"))
    if how == "cluster-cannot-start":
        assert trained == ["train-all rows", *(f"train-store={store}" for store in sorted(SIGNS))]
    else:
        assert trained == ["train-all rows", "train-store=a..store=b (2)", "train-store=c..store=d (2)"]
    assert all(t.state is not None and t.state.is_completed() for t in task_runs if t.name.startswith("train-"))
    # The cluster the flow started early for its fan-out is stopped with it: no worker process left.
    workers = [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(_cmdline(p))]
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # exited meanwhile
        return []
