"""Paths a person types resolve where they typed them: the CLI against the working directory,
forms and triggers (the flow's own parameters) against the project root. The README's example
`conveyor train wine --data data/wine-2024-06.csv` is exactly the first case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import classification_frame, write_csv, write_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONVEYOR = str(Path(sys.executable).parent / "conveyor")


def conveyor(cwd: Path, project: Path, api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in `cwd` for `project`, on the session's Prefect API (paths, not the embedded mode, are tested here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(project / ".prefect"), PREFECT_API_URL=api_url
    )
    if cwd != project and not cwd.is_relative_to(project):
        env["CONVEYOR_HOME"] = str(project)
    return subprocess.run([CONVEYOR, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_readme_commands_with_relative_paths_from_the_root_and_from_elsewhere(
    tmp_path: Path, prefect_api_url: str
) -> None:
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    write_csv(project, "data/train.csv", classification_frame())
    write_spec(project, "churn", "../data/train.csv")
    june = classification_frame(seed=1)
    write_csv(project, "data/churn-2024-06.csv", june)
    write_csv(project, "data/churn-2024-07.csv", june.head(300))  # inside the contract June drafts

    first = conveyor(project, project, prefect_api_url, "train", "churn", "--data", "data/churn-2024-06.csv")
    assert first.returncode == 0, first.stderr
    assert "churn v1: promoted" in first.stdout

    elsewhere = tmp_path / "elsewhere"
    write_csv(elsewhere, "batch.csv", classification_frame(rows=50, seed=2).drop(columns=["label"]))
    scored = conveyor(
        elsewhere, project, prefect_api_url, "score", "churn", "--input", "batch.csv", "--output", "out/scored.csv"
    )
    assert scored.returncode == 0, scored.stderr
    assert (elsewhere / "out" / "scored.csv").is_file()

    second = conveyor(
        elsewhere, project, prefect_api_url, "train", "churn", "--data", "../project/data/churn-2024-07.csv"
    )
    assert second.returncode == 0, second.stderr
    assert "churn v2" in second.stdout
