"""Many models at once under the Prefect harness, against real MLflow stores: several specs in one
parent run (threads and a real Dask LocalCluster), and the fleet view over them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor import registry
from conveyor.errors import DataError
from flows.fleet import fleet_flow, train_many, train_many_flow
from flows.monitoring import monitoring_flow
from flows.scoring import scoring_flow
from flows.training import training_flow
from tasks.fleet import read_fleet, table_rows
from tests.conftest import REPO
from tests.factories import classification_frame, copy_project, project_home, write_csv, write_spec
from tests.flows.test_loop import drifted

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOOD = ("alpha", "beta", "gamma")
CONVEYOR = REPO / ".venv" / "bin" / "conveyor"


def child_runs(parent_id: Any) -> list[Any]:
    """The training flow runs started under a parent flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )


@pytest.fixture(scope="module")
def fleet_template(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Three good specs and one whose data does not exist, trained once in one parent run."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from conveyor.orchestration import fanout_task_runner

    with project_home(tmp_path_factory.mktemp("fleet")) as root:
        specs = []
        for seed, name in enumerate(GOOD):
            write_csv(root, f"data/{name}.csv", classification_frame(rows=800 if name == "gamma" else 300, seed=seed))
            specs.append(str(write_spec(root, name, f"../data/{name}.csv")))
        specs.insert(1, str(write_spec(root, "broken", "../data/missing-*.csv")))
        runner = fanout_task_runner(dask=False, max_workers=2)
        # Heartbeats on, as for a run on the stack (the harness turns them off): the parent sends
        # them, its children, which live inside its tasks, must not (see test below).
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
            state = train_many_flow.with_options(task_runner=runner)(specs=specs, return_state=True)
        return root, state


def heartbeats_of(flow_run_ids: list[Any]) -> set[str]:
    """The flow runs among `flow_run_ids` that sent a heartbeat event (as stored by the API)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}" for run_id in flow_run_ids]),
    )
    with get_client(sync_client=True) as client:
        events = client.read_events(filter=wanted, limit=50).events  # the API allows at most 50
    return {event.resource.id.removeprefix("prefect.flow-run.") for event in events}


def test_the_parent_run_sends_heartbeats_and_its_child_runs_none(fleet_template: tuple[Path, Any]) -> None:
    """A child lives inside a task of its parent, whose heartbeats already say it is alive; each
    child's own would make it about a second longer (Prefect joins the heartbeat thread)."""
    parent = str(fleet_template[1].state_details.flow_run_id)
    children = [str(run.id) for run in child_runs(parent)]
    assert len(children) == 4
    # Events are stored a moment after they are sent: wait for the parent's, then look at all.
    deadline = time.monotonic() + 60
    while parent not in (sent := heartbeats_of([parent, *children])) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert parent in sent, "the parent run sent no heartbeat (is the event stored at all?)"
    assert not sent & set(children), sent


@pytest.fixture
def fleet_project(project: Path, fleet_template: tuple[Path, Any]) -> Path:
    copy_project(fleet_template[0], project)
    return project


def test_many_specs_one_broken_the_others_finish_and_it_is_named(fleet_template: tuple[Path, Any]) -> None:
    root, state = fleet_template
    assert state.is_completed()
    outcomes = {o["model"]: o for o in state.result()}
    assert set(outcomes) == {*GOOD, "broken"}
    for name in GOOD:
        assert outcomes[name]["status"] == "promoted", outcomes[name]
        assert outcomes[name]["exit_code"] == 0
    broken = outcomes["broken"]
    assert broken["status"] == "failed"
    assert "missing-*.csv" in broken["detail"], broken
    assert broken["exit_code"] == DataError.exit_code
    # One child training run per spec under the parent run, the broken one Failed with its reason.
    children = {run.name: run for run in child_runs(state.state_details.flow_run_id)}
    assert set(children) == {f"train-{name}" for name in (*GOOD, "broken")}
    assert children["train-broken"].state.is_failed()
    assert "missing-*.csv" in (children["train-broken"].state.message or "")
    assert all(children[f"train-{name}"].state.is_completed() for name in GOOD)


def test_fleet_view_shows_failing_then_drifting_then_healthy(fleet_project: Path) -> None:
    # alpha: its latest run fails on data that breaks its contract.
    bad = classification_frame(rows=300, seed=5)
    bad["x1"] = "not a number"
    path = write_csv(fleet_project, "incoming/alpha-bad.csv", bad)
    assert training_flow(spec="alpha", data_path=str(path), return_state=True).is_failed()
    # gamma: scored on shifted data, then monitored: drift.
    batch = write_csv(fleet_project, "incoming/shifted.csv", drifted(1500, seed=9).drop(columns=["label"]))
    scoring_flow(model="gamma", input_path=str(batch), output_path=str(fleet_project / "scored.parquet"))
    assert monitoring_flow(model="gamma", since_hours=None)["drift_detected"] is True
    # beta: untouched and healthy.

    rows = read_fleet()
    assert [row.model for row in rows] == ["alpha", "gamma", "beta"]
    alpha, gamma, beta = rows
    assert alpha.attention[0] == "failing" and "x1" in alpha.last_error, alpha.last_error
    assert alpha.failures == 1 and alpha.runs == 2
    assert alpha.champion == "1"  # a failed run leaves the champion where it was
    assert gamma.attention == ["drift"] and gamma.monitoring.startswith("drift")
    assert beta.attention == [] and beta.status == "healthy" and beta.last_decision == "promoted"

    # The flow publishes the same view: a Prefect table artifact and the HTML page in MLflow.
    from prefect.client.orchestration import get_client

    state = fleet_flow(return_state=True)
    assert [row["model"] for row in state.result()] == ["alpha", "gamma", "beta"]
    with get_client(sync_client=True) as client:
        artifact = next(a for a in client.read_latest_artifacts() if a.key == "fleet")
    assert "alpha" in str(artifact.data) and "3 model(s), 2 need a person" in (artifact.description or "")
    experiment = registry.client().get_experiment_by_name("conveyor-fleet")
    (run,) = registry.client().search_runs([experiment.experiment_id])
    html = registry.artifact_text(run.info.run_id, "fleet/fleet.html")
    assert html.index(">alpha<") < html.index(">gamma<") < html.index(">beta<")
    assert table_rows(rows)[0]["status"] in html


@pytest.mark.timeout(1200)  # a lost cluster must fail the test, not hang the suite
def test_many_specs_fan_out_on_a_dask_local_cluster(fleet_project: Path) -> None:
    """Two new models trained by Dask worker processes: their runs reach the harness's API and
    their versions land in the project's MLflow store."""
    specs = []
    for seed, name in enumerate(("delta", "epsilon"), start=10):
        write_csv(fleet_project, f"data/{name}.csv", classification_frame(rows=300, seed=seed))
        specs.append(str(write_spec(fleet_project, name, f"../data/{name}.csv")))

    outcomes = train_many(specs, max_parallel=2, dask=True)

    assert [(o["model"], o["status"]) for o in outcomes] == [("delta", "promoted"), ("epsilon", "promoted")]
    for name in ("delta", "epsilon"):
        champion = registry.alias_version(name, registry.CHAMPION)
        assert champion is not None and champion.tags["conveyor.decision"] == "promoted"
        run = registry.client().get_run(champion.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["conveyor.prefect_flow_run_id"]
        trained_in = run.data.tags["conveyor.prefect_flow_run_id"]
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(trained_in)
        assert flow_run.state is not None and flow_run.state.is_completed()


@pytest.mark.e2e
def test_cli_trains_several_specs_with_one_temporary_server(tmp_path: Path) -> None:
    """`conveyor train a.yaml b.yaml` with no Prefect API set: one temporary server for both."""
    (tmp_path / "pipelines").mkdir()
    for seed, name in enumerate(("a", "b")):
        write_csv(tmp_path, f"data/{name}.csv", classification_frame(rows=300, seed=seed))
        write_spec(tmp_path, name, f"../data/{name}.csv")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
        PREFECT_HOME=str(tmp_path / ".prefect"),
        CONVEYOR_HOME=str(tmp_path),
        OMP_NUM_THREADS="1",
    )
    result = subprocess.run(
        [str(CONVEYOR), "train", "pipelines/a.yaml", "pipelines/b.yaml", "--verbose"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("Starting temporary server") == 1, output[-3000:]
    assert "2 model(s): 2 done, 0 failed" in result.stdout
