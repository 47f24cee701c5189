"""Where the CLI finds its tracking store: the environment, the project's running stack, or SQLite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from conveyor import settings
from conveyor.process_identity import started_since_boot


def write_state(root: Path, pid: int, started: float, auth: bool = False) -> None:
    state_dir = root / ".conveyor"
    state_dir.mkdir(parents=True, exist_ok=True)
    service = {"pid": pid, "started": started}
    state = {"mlflow_url": "http://127.0.0.1:5999", "auth": auth, "services": {"mlflow-server": service}}
    (state_dir / "stack.json").write_text(json.dumps(state))


def my_start() -> float:
    started = started_since_boot(os.getpid())
    assert started is not None
    return started


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_without_a_stack_the_cli_uses_the_projects_sqlite_store(root: Path) -> None:
    assert settings.tracking_uri() == f"sqlite:///{root / '.conveyor' / 'mlflow.db'}"


def test_a_running_stacks_mlflow_server_is_used_so_its_served_artifacts_can_be_read(root: Path) -> None:
    write_state(root, os.getpid(), my_start())
    assert settings.tracking_uri() == "http://127.0.0.1:5999"


@pytest.mark.parametrize("why", ["pid reused by another process", "hardened profile", "unreadable"])
def test_a_dead_hardened_or_broken_stack_state_falls_back_to_sqlite(root: Path, why: str) -> None:
    if why == "pid reused by another process":
        write_state(root, os.getpid(), my_start() - 100)
    elif why == "hardened profile":
        write_state(root, os.getpid(), my_start(), auth=True)
    else:
        (root / ".conveyor").mkdir()
        (root / ".conveyor" / "stack.json").write_text("{not json")
    assert settings.tracking_uri().startswith("sqlite:///")


def test_the_environment_wins_over_a_running_stack(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_state(root, os.getpid(), my_start())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert settings.tracking_uri() == "sqlite:////elsewhere/mlflow.db"


def test_the_running_stack_is_found_after_the_wall_clock_moves(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An NTP step moves the kernel's boot time and every psutil creation time with it; the
    recorded start since boot does not move (the step itself stands in as the boot time read)."""
    write_state(root, os.getpid(), my_start())
    boot = psutil.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot - 3.0)
    assert settings.tracking_uri() == "http://127.0.0.1:5999"
