"""`conveyor train` killed with SIGKILL mid-run, then run again: the rerun neither waits for the
dead holder nor leaves more versions than a clean run, and every alias, decision and audit entry
agrees. The real CLI in subprocesses; the kill takes the whole process group (the temporary
Prefect server too), as a terminal's kill of a job would."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.factories import classification_frame, write_csv, write_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONVEYOR = str(Path(sys.executable).parent / "conveyor")
# The CLI with a fault injected: SIGKILL to the process group when promotion reaches STEP.
KILL_AT_STEP = """
import os, signal, sys
import tasks.registry as promotion
step = os.environ["KILL_AT_STEP"]
promotion.CHECKPOINT = lambda at: os.killpg(0, signal.SIGKILL) if at == step else None
from app.cli import main
sys.argv = ["conveyor", *sys.argv[1:]]
main()
"""


def environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(project / ".prefect"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        CONVEYOR_HOME=str(project),
        CONVEYOR_SLOT_TIMEOUT_SECONDS="120",  # a rerun that waited for the dead would fail, not hang
    )
    return env


def store_rows(project: Path, query: str) -> list[tuple]:
    store = project / ".conveyor" / "mlflow.db"
    if not store.exists():
        return []
    with closing(sqlite3.connect(store, timeout=30)) as db:
        try:
            return list(db.execute(query))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the command has opened the store and not yet made its tables
                return []
            raise


def running_training_runs(project: Path) -> list[tuple]:
    return store_rows(
        project,
        "SELECT runs.run_uuid FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
        "WHERE runs.status = 'RUNNING' AND tags.key = 'conveyor.kind' AND tags.value = 'training'",
    )


def killed_in_group(args: list[str], project: Path, until: object, deadline: float = 300) -> None:
    """Start args in a new session; SIGKILL the whole group once `until()` holds (or it dies itself)."""
    process = subprocess.Popen(
        args,
        cwd=project,
        env=environment(project) | {"KILL_AT_STEP": os.environ.get("KILL_AT_STEP", "")},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + deadline
    try:
        while process.poll() is None and time.monotonic() < end:
            if until():  # type: ignore[operator]
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def rerun(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVEYOR, "train", "churn"],
        cwd=project,
        env=environment(project),
        capture_output=True,
        text=True,
        timeout=400,
    )


def assert_consistent(project: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.conveyor' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='churn'")
    assert len(versions) == 1, [dict(v.tags) for v in versions]  # exactly what a clean run leaves
    (version,) = versions
    assert version.tags["conveyor.decision"] == "promoted"
    assert client.get_model_version_by_alias("churn", "champion").version == version.version
    audit = client.get_experiment_by_name("conveyor-audit")
    entries = client.search_runs([audit.experiment_id], filter_string="tags.`conveyor.model` = 'churn'")
    assert [(r.data.tags["conveyor.version"], r.data.tags["conveyor.outcome"]) for r in entries] == [
        (str(version.version), "promoted")
    ]
    assert running_training_runs(project) == []
    assert store_rows(project, "PRAGMA integrity_check") == [("ok",)]


@pytest.fixture
def churn(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    write_csv(tmp_path, "data/train.csv", classification_frame())
    write_spec(tmp_path, "churn", "../data/train.csv")
    return tmp_path


def test_killed_while_training_then_rerun(churn: Path) -> None:
    killed_in_group([CONVEYOR, "train", "churn"], churn, until=lambda: bool(running_training_runs(churn)))
    assert running_training_runs(churn)  # the dead run left its MLflow run RUNNING
    result = rerun(churn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "promoted" in result.stdout
    assert_consistent(churn)


@pytest.mark.parametrize("step", ["champion"])
def test_killed_during_promotion_then_rerun(step: str, churn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILL_AT_STEP", step)
    killed_in_group([sys.executable, "-c", KILL_AT_STEP, "train", "churn"], churn, until=lambda: False)
    result = rerun(churn)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_consistent(churn)
