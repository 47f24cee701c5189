"""A service that is down: the CLI says which, in one line, in seconds (not MLflow's 4.5 minutes of
retries), with exit code 6, and nothing is written anywhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.factories import classification_frame, write_csv, write_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONVEYOR = str(Path(sys.executable).parent / "conveyor")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MLFLOW_HTTP = ("MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}", "the MLflow tracking server http://127.0.0.1:{port}")
MLFLOW_PG = ("MLFLOW_TRACKING_URI", "postgresql://bob:secret@127.0.0.1:{port}/mlflow", "bob:***@127.0.0.1:{port}")
PREFECT = ("PREFECT_API_URL", "http://127.0.0.1:{port}/api", "the Prefect API http://127.0.0.1:{port}/api")


@pytest.mark.parametrize(
    ("command", "down"),
    [("train", MLFLOW_HTTP), ("train", MLFLOW_PG), ("train", PREFECT), ("show", MLFLOW_HTTP), ("show", MLFLOW_PG)],
)
def test_a_service_that_is_down_fails_fast_with_one_line(tmp_path: Path, command: str, down: tuple[str, ...]) -> None:
    variable, value, named = down
    (tmp_path / "pipelines").mkdir()
    write_csv(tmp_path, "data/train.csv", classification_frame(rows=50))
    write_spec(tmp_path, "churn", "../data/train.csv")
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(tmp_path / ".prefect"))
    env[variable] = value.format(port=port)

    started = time.monotonic()
    result = subprocess.run(
        [CONVEYOR, command, "churn"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started

    assert result.returncode == 6, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named.format(port=port) in lines[0]
    assert "secret" not in result.stderr + result.stdout
    assert elapsed < 60, elapsed  # MLflow alone would retry for about 270 s
    assert not (tmp_path / ".conveyor" / "mlflow.db").exists()
