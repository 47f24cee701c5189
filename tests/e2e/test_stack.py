"""The local stack for real: `conveyor up`, a run started as the UI's Run button does, `down`.

The SQLite profile runs on the shared stack `loop`; the PostgreSQL profile starts one of
its own (in a throwaway copy of the project, on free ports) and drops its databases at the end.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import NIGHTLY, ON_DEMAND, Stack, drop_databases, new_stack, start, stop
from tests.factories import classification_frame, write_csv, write_spec

STACK = "loop"  # the shared stack this module runs on (tests/e2e/conftest.py)
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

MODEL = "e2e"
RACE_MODEL = "race"
# Two runs started at once show the limit: one holds the slot, the other queues behind it.
RACERS = 2


def stack_project(root: Path) -> None:
    """This module's models: `e2e`, and `race` with RACERS samples that compete for champion."""
    frame = classification_frame(rows=300, seed=1)
    write_csv(root, "data/e2e.csv", frame)
    write_spec(root, MODEL, "../data/e2e.csv", **ON_DEMAND)
    # Samples of one population (each leaves out a different tenth): versions that compete for
    # champion, all within the contract drafted from whichever run goes first.
    write_spec(root, RACE_MODEL, "../data/race-0.csv", contract={"range_tolerance": 0.5}, **ON_DEMAND)
    for k in range(RACERS):
        write_csv(root, f"data/race-{k}.csv", frame.drop(index=range(30 * k, 30 * k + 30)))


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if request.param == "sqlite":
        yield request.getfixturevalue("running_stack")
        return
    own = new_stack(tmp_path_factory.mktemp("stack-postgresql") / "project", request.getfixturevalue("postgres_url"))
    stack_project(own.root)
    try:
        yield start(own)
    finally:
        own.cli("down")  # a no-op when the last test already stopped it
        drop_databases(own)


def test_up_again_says_so_and_status_shows_every_service_healthy(stack: Stack) -> None:
    again = stack.cli("up")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout

    status = stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for service in ("prefect-server", "mlflow-server", "worker", "serving"):
        line = next(line for line in status.stdout.splitlines() if line.startswith(service))
        assert "healthy" in line and "not healthy" not in line

    state = stack.state()
    assert state["ready"] is True
    assert {svc["name"]: svc.get("port") for svc in state["services"].values()} == {
        "prefect-server": stack.prefect_port,
        "mlflow-server": stack.mlflow_port,
        "worker": None,
        "serving": int(stack.env["CONVEYOR_SERVING_PORT"]),
    }
    assert (stack.root / ".conveyor" / "logs" / "prefect-server.log").stat().st_size > 0


def test_the_profile_uses_its_own_stores(stack: Stack) -> None:
    import httpx

    assert httpx.get(f"{stack.api_url}/health", timeout=5).json() is True
    assert httpx.get(f"{stack.mlflow_url}/health", timeout=5).status_code == 200
    prefect_db = stack.root / ".conveyor" / "prefect" / "prefect.db"
    mlflow_db = stack.root / ".conveyor" / "mlflow.db"
    if stack.database_prefix is None:
        assert stack.state()["profile"] == "sqlite"
        assert prefect_db.is_file() and mlflow_db.is_file()
    else:
        import psycopg

        assert stack.state()["profile"] == "postgresql"
        assert not prefect_db.exists() and not mlflow_db.exists()
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        assert {f"{stack.database_prefix}_prefect", f"{stack.database_prefix}_mlflow"} <= names


def test_every_spec_becomes_a_scheduled_deployment_without_editing_prefect_yaml(
    stack: Stack,
) -> None:
    import yaml
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        DeploymentFilterTags,
    )

    from app.stack.config import StackConfig
    from app.stack.deploy_stamp import deployments_current

    if stack.database_prefix is not None:
        pytest.skip("deployments go through Prefect's API whatever its database: the SQLite stack covers them")
    specs = sorted(path.stem for path in (stack.root / "pipelines").glob("*.yaml"))
    listed = {item["name"] for item in yaml.safe_load((stack.root / "prefect.yaml").read_text())["deployments"]}
    with stack.prefect() as client:
        deployed = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=sorted(listed)))
        )
        assert {d.name for d in deployed} == listed  # every flow of prefect.yaml is deployed
        assert {d.work_pool_name for d in deployed} == {"conveyor"}
        training = client.read_deployment_by_name("training/training")
        assert training.work_pool_name == "conveyor"
        assert training.parameter_openapi_schema["properties"]["spec"]["enum"] == specs
        generated = {
            d.name: d
            for d in client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["conveyor:spec"]))
            )
        }
    assert sorted(generated) == [f"train-{name}" for name in specs]
    ours = generated[f"train-{MODEL}"]
    assert ours.parameters == {"spec": MODEL}
    assert ours.parameter_openapi_schema["properties"]["spec"]["enum"] == [MODEL]
    assert ours.schedules == []  # `schedule.cron: null`: trained only when asked
    nightly = generated[f"train-{NIGHTLY}"]  # a spec without a schedule gets the nightly default
    assert [(s.schedule.cron, s.schedule.timezone) for s in nightly.schedules] == [("0 2 * * *", "UTC")]
    assert ours.global_concurrency_limit is not None and ours.global_concurrency_limit.limit == 1
    assert f"model:{MODEL}" in ours.tags

    # `up` remembers what it deployed: a second `up` skips `prefect deploy` while nothing changed.
    config = StackConfig(stack.root, stack.prefect_port, stack.mlflow_port)
    assert deployments_current(config, stack.api_url) == (True, True)

    # A new model is a new spec file: `conveyor deploy` makes its deployment, with its schedule.
    write_spec(
        stack.root,
        "newcomer",
        "../data/e2e.csv",
        schedule={"cron": "15 4 * * 1", "timezone": "Europe/Paris"},
    )
    assert deployments_current(config, stack.api_url) == (True, False)
    added = stack.cli("deploy", "--specs-only")
    assert added.returncode == 0, added.stderr
    assert "created train-newcomer" in added.stdout
    assert "unchanged" in added.stdout and "updated" not in added.stdout
    with stack.prefect() as client:
        newcomer = client.read_deployment_by_name("training/train-newcomer")
        assert [(s.schedule.cron, s.schedule.timezone) for s in newcomer.schedules] == [("15 4 * * 1", "Europe/Paris")]

    # A broken spec is reported and removes nothing; deleting the spec removes its deployment.
    (stack.root / "pipelines" / "newcomer.yaml").write_text("name: newcomer\ndata: {path: x.csv}\n")
    broken = stack.cli("deploy", "--specs-only")
    assert broken.returncode == 2
    assert "newcomer.yaml" in broken.stderr and "data.target" in broken.stderr
    with stack.prefect() as client:
        client.read_deployment_by_name("training/train-newcomer")
    (stack.root / "pipelines" / "newcomer.yaml").unlink()
    removed = stack.cli("deploy", "--specs-only")
    assert removed.returncode == 0, removed.stderr
    assert "removed train-newcomer" in removed.stdout
    assert deployments_current(config, stack.api_url) == (True, True)
    with stack.prefect() as client:  # a deployment lost on the server means deploying again
        client.delete_deployment(client.read_deployment_by_name("watch/watch").id)
    assert deployments_current(config, stack.api_url) == (False, False)
    redeployed = stack.cli("deploy")
    assert redeployed.returncode == 0, redeployed.stderr
    assert deployments_current(config, stack.api_url) == (True, True)


def test_a_run_from_the_training_deployment_promotes_a_champion_in_the_mlflow_server(
    stack: Stack,
) -> None:
    run = stack.run_deployment("training/training", {"spec": MODEL})
    (final,) = stack.wait_final([run.id])
    assert final.state.is_completed(), f"{final.state.name}: {final.state.message}\n{stack.tail()}"
    assert final.name == f"train-{MODEL}"
    assert f"model:{MODEL}" in final.tags

    client = stack.mlflow()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == "1"
    for tag in ("conveyor.data_digest", "conveyor.spec_digest", "conveyor.lineage_key"):
        assert len(champion.tags[tag]) == 64, tag
    assert champion.tags["conveyor.decision"] == "promoted"
    mlflow_run = client.get_run(champion.run_id)
    assert mlflow_run.data.tags["conveyor.prefect_flow_run_id"] == str(final.id)
    # Sent through the server (as a runner on another machine would), stored under .conveyor/artifacts.
    assert mlflow_run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert any((stack.root / ".conveyor" / "artifacts" / mlflow_run.info.experiment_id).rglob("MLmodel"))

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stack.prefect() as prefect:
        artifacts = prefect.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[final.id])))
    assert any(a.type == "markdown" and "promoted" in (a.data or "") for a in artifacts)


def test_runs_of_one_model_started_at_once_queue_one_at_a_time(stack: Stack) -> None:
    if stack.database_prefix is None:
        pytest.skip("concurrent runs are the PostgreSQL profile's job (SQLite locks under them)")
    runs = [
        stack.run_deployment(f"training/train-{RACE_MODEL}", {"data_path": str(stack.root / f"data/race-{seed}.csv")})
        for seed in range(RACERS)
    ]
    finals = stack.wait_final([run.id for run in runs], timeout=1500)
    assert all(run.state.is_completed() for run in finals), [
        (run.name, run.state.name, run.state.message) for run in finals
    ]

    # The limit held: ordered by start, each run started after the previous one ended.
    spans = sorted((run.start_time, run.end_time) for run in finals)
    for (_, previous_end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert next_start >= previous_end, spans
    # ...and the queueing was visible: waiting runs went through AwaitingConcurrencySlot.
    with stack.prefect() as client:
        waited = [
            run.id
            for run in finals
            if any(state.name == "AwaitingConcurrencySlot" for state in client.read_flow_run_states(run.id))
        ]
    assert len(waited) >= 1

    client = stack.mlflow()
    versions = client.search_model_versions(f"name='{RACE_MODEL}'")
    assert len(versions) == RACERS
    champion = client.get_model_version_by_alias(RACE_MODEL, "champion")
    holding = [v.version for v in versions if "champion" in client.get_model_version(RACE_MODEL, v.version).aliases]
    assert holding == [champion.version]
    assert champion.tags["conveyor.decision"] == "promoted"
    assert "database is locked" not in stack.logs()


def test_down_stops_every_process_it_started_and_frees_the_ports(stack: Stack) -> None:
    stop(stack)
    again = stack.cli("down")
    assert again.returncode == 0 and "not running" in again.stdout
    status = stack.cli("status")
    assert status.returncode == 1 and "not running" in status.stdout


def test_up_refuses_a_busy_port_and_starts_nothing(tmp_path: Path) -> None:
    stack = new_stack(tmp_path / "project")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack.env["CONVEYOR_PREFECT_PORT"] = str(port)
        result = stack.cli("up", timeout=120)
    assert result.returncode == 5
    assert f"port 127.0.0.1:{port} is in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not stack.running
