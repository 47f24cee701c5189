"""A model's lock dies with its holder, names its holder to a waiter, gives up after its timeout,
and is keyed by project: a real second process holds it (the embedded mode's file lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import locks
from conveyor.errors import BusyError

HOLD = """
import sys, time
from conveyor import locks
with locks.model_lock("train", "churn", 5, what="training churn (test holder)"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded mode: no Prefect server (not even the session's test harness), a SQLite store."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    (tmp_path / "pipelines").mkdir()
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("CONVEYOR_LOCK_DIR", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield tmp_path


def holder(project: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"CONVEYOR_HOME": str(project)}
    process = subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_waiter_names_the_holder_and_gives_up_after_its_timeout(embedded: Path) -> None:
    assert locks.backend() == "file"
    process = holder(embedded)
    try:
        with (
            pytest.raises(BusyError, match=rf"gave up after 1 s .* held by pid {process.pid} on .*test holder"),
            locks.model_lock("train", "churn", 1),
        ):
            pass
    finally:
        process.kill()
        process.wait()


def test_a_killed_holder_frees_the_lock_at_once(embedded: Path) -> None:
    process = holder(embedded)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    started = time.monotonic()
    with locks.model_lock("train", "churn", 30) as kind:
        assert kind == "file"
    assert time.monotonic() - started < 25  # it did not wait out the timeout


def test_two_projects_never_share_a_lock(
    embedded: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path_factory.mktemp("other")
    (other / "pipelines").mkdir()
    process = holder(other)
    try:
        with locks.model_lock("train", "churn", 1):
            pass  # the other project's holder does not block this project
    finally:
        process.kill()
        process.wait()
    here = locks.lock_name("train", "churn")
    monkeypatch.setenv("CONVEYOR_HOME", str(other))
    assert locks.lock_name("train", "churn") != here  # also under one Prefect server or database
