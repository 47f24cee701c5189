"""The scaled stack's generated command lines and environments: Dask processes, the S3 store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.stack import scaled
from app.stack.auth import owner_only
from app.stack.config import StackConfig, StackError
from app.stack.services import commands, dask_env, mlflow_env, worker_env
from app.stack.state import Service, StackState


def _scaled(tmp_path: Path, workers: int = 2, s3: bool = True) -> StackConfig:
    config = scaled.with_ports(StackConfig(tmp_path, dask_workers=workers, s3=s3))
    if s3:
        scaled.ensure_s3_identity(config)
    return config


def test_the_default_stack_proxies_artifacts_through_the_tracking_server(tmp_path: Path) -> None:
    config = StackConfig(tmp_path)
    line = commands(config)["mlflow-server"]
    # A local --default-artifact-root would hand clients a path on the server's disk.
    assert "--default-artifact-root" not in line
    assert line[line.index("--artifacts-destination") + 1] == str(config.artifacts_dir)
    assert set(commands(config)) == {"prefect-server", "mlflow-server", "worker"}
    assert "CONVEYOR_DASK_ADDRESS" not in worker_env(config)


def test_dask_workers_make_a_scheduler_and_one_single_threaded_worker_each(tmp_path: Path) -> None:
    config = _scaled(tmp_path, workers=3, s3=False)
    lines = commands(config)
    assert [name for name in lines if name.startswith("dask")] == [
        "dask-scheduler", "dask-worker-1", "dask-worker-2", "dask-worker-3",
    ]  # fmt: skip
    scheduler = lines["dask-scheduler"]
    assert scheduler[scheduler.index("--host") + 1] == "127.0.0.1"
    assert scheduler[scheduler.index("--port") + 1] == str(config.dask_port)
    assert scheduler[scheduler.index("--dashboard-address") + 1] == f"127.0.0.1:{config.dask_dashboard_port}"
    worker = lines["dask-worker-2"]
    assert worker[2] == f"tcp://127.0.0.1:{config.dask_port}"
    assert worker[worker.index("--nthreads") + 1] == "1" and worker[worker.index("--host") + 1] == "127.0.0.1"

    assert worker_env(config)["CONVEYOR_DASK_ADDRESS"] == f"tcp://127.0.0.1:{config.dask_port}"
    env = dask_env(config)
    assert "CONVEYOR_DASK_ADDRESS" not in env  # a task on the cluster does not fan out onto it
    assert env["OMP_NUM_THREADS"] == "1" and env["MLFLOW_TRACKING_URI"] == config.mlflow_url
    assert env["PYTHONPATH"].split(":")[0] == str(config.root)


def test_s3_starts_seaweedfs_on_free_ports_and_mlflow_stores_artifacts_in_the_bucket(tmp_path: Path) -> None:
    config = _scaled(tmp_path, workers=0)
    lines = commands(config)
    weed = lines["seaweedfs"]
    flags = dict(arg[1:].split("=", 1) for arg in weed[2:] if "=" in arg)
    assert weed[1:3] == ["server", "-s3"] and flags["ip.bind"] == "127.0.0.1"
    assert flags["s3.port"] == str(config.s3_port) and flags["dir"] == str(config.seaweedfs_dir)
    ports = [int(value) for name, value in flags.items() if name.endswith(("port", "port.grpc"))]
    assert len(ports) == len(set(ports)) == 8 and 0 not in ports  # none of SeaweedFS's fixed defaults
    mlflow = lines["mlflow-server"]
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == "s3://conveyor/mlflow-artifacts"

    identity = scaled.s3_identity(config)
    assert owner_only(config.s3_identity_file) and owner_only(config.s3_env_file)
    assert identity.secret_key not in " ".join(arg for line in lines.values() for arg in line)
    server = mlflow_env(config)
    assert server["MLFLOW_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{config.s3_port}"
    assert server["AWS_SECRET_ACCESS_KEY"] == identity.secret_key
    for env in (worker_env(config), dask_env(config)):
        assert env["AWS_ENDPOINT_URL"] == config.s3_endpoint_url
        assert env["AWS_ACCESS_KEY_ID"] == identity.access_key
    exported = config.s3_env_file.read_text()
    assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{config.s3_port}" in exported

    # Kept across starts: a second `up` (new ports) reuses the identity.
    again = _scaled(tmp_path, workers=0)
    assert scaled.s3_identity(again) == identity
    assert json.loads(config.s3_identity_file.read_text())["identities"][0]["name"] == "conveyor"


def test_an_identity_file_others_can_read_is_refused(tmp_path: Path) -> None:
    config = _scaled(tmp_path, workers=0)
    config.s3_identity_file.chmod(0o644)
    with pytest.raises(StackError, match="readable by others"):
        scaled.s3_identity(config)


@pytest.mark.parametrize("raw", ["-1", "two", "65"])
def test_a_dask_worker_count_it_cannot_use_is_refused(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_DASK_WORKERS", raw)
    with pytest.raises(StackError, match=f"CONVEYOR_DASK_WORKERS={raw!r}: use a whole number from 0 to 64"):
        StackConfig.from_env(Path("."))


def test_the_running_stack_is_read_back_from_its_state(tmp_path: Path) -> None:
    config = _scaled(tmp_path, workers=2)
    state = StackState(
        root=str(tmp_path), profile="sqlite", prefect_ui_url="", prefect_api_url="", mlflow_url="",
        started_at=0.0, dask_dashboard_url=scaled.dashboard_url(config),
    )  # fmt: skip
    for name in commands(config):
        port = {"dask-scheduler": config.dask_port, "seaweedfs": config.s3_port}.get(name)
        state.services[name] = Service(name=name, pid=1, started=0.0, log="", cmd=[], port=port)
    read = scaled.from_state(StackConfig(tmp_path), state)
    assert (read.dask_workers, read.dask_port, read.dask_dashboard_port) == (
        2,
        config.dask_port,
        config.dask_dashboard_port,
    )
    assert (read.s3, read.s3_endpoint_url) == (True, config.s3_endpoint_url)
