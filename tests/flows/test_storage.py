"""A full disk under the artifact store: one line and exit code 8, nothing registered, the run
ended FAILED; the next run after space returns trains. A real tmpfs of 1 MB (`tiny_disk`, tests/conftest.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor import registry
from conveyor.errors import StorageError
from flows.training import training_flow
from tests.factories import classification_frame, write_csv, write_spec

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_full_artifact_disk_fails_cleanly_and_the_next_run_trains(
    project: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ARTIFACT_ROOT", str(tiny_disk / "artifacts"))
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # leave 64 kB: less than one model
    write_csv(project, "data/train.csv", classification_frame())
    spec = write_spec(project, "churn", "../data/train.csv")

    with pytest.raises(StorageError, match="no space left") as caught:
        training_flow(spec=str(spec))
    assert caught.value.exit_code == 8
    assert registry.list_versions("churn") == []
    assert registry.alias_version("churn", registry.CHAMPION) is None
    (run,) = registry.training_runs("churn")
    assert run.info.status == "FAILED"
    assert "no space left" in run.data.tags["conveyor.error"]

    filler.unlink()
    result = training_flow(spec=str(spec))
    assert result["outcome"] == "promoted" and result["version"] == "1"


def test_a_read_only_artifact_disk_fails_cleanly_and_the_next_run_trains(
    project: Path, tiny_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root ignores file permissions, so the disk itself is made read-only (remount)."""
    monkeypatch.setenv("CONVEYOR_ARTIFACT_ROOT", str(tiny_disk / "artifacts"))
    write_csv(project, "data/train.csv", classification_frame())
    spec = write_spec(project, "churn", "../data/train.csv")
    subprocess.run(["mount", "-o", "remount,size=64m,ro", str(tiny_disk)], check=True)

    with pytest.raises(StorageError, match="read-only file system") as caught:
        training_flow(spec=str(spec))
    assert caught.value.exit_code == 8
    assert registry.list_versions("churn") == []
    (run,) = registry.training_runs("churn")
    assert run.info.status == "FAILED"

    subprocess.run(["mount", "-o", "remount,rw", str(tiny_disk)], check=True)
    result = training_flow(spec=str(spec))
    assert result["outcome"] == "promoted" and result["version"] == "1"
