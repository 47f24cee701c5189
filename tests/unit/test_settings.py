"""Where the CLI finds its tracking store: the environment, the project's running stack, or SQLite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from conveyor import settings


def write_state(root: Path, pid: int, create_time: float, auth: bool = False) -> None:
    state_dir = root / ".conveyor"
    state_dir.mkdir(parents=True, exist_ok=True)
    service = {"pid": pid, "create_time": create_time}
    state = {"mlflow_url": "http://127.0.0.1:5999", "auth": auth, "services": {"mlflow-server": service}}
    (state_dir / "stack.json").write_text(json.dumps(state))


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONVEYOR_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_without_a_stack_the_cli_uses_the_projects_sqlite_store(root: Path) -> None:
    assert settings.tracking_uri() == f"sqlite:///{root / '.conveyor' / 'mlflow.db'}"


def test_a_running_stacks_mlflow_server_is_used_so_its_served_artifacts_can_be_read(root: Path) -> None:
    me = psutil.Process(os.getpid())
    write_state(root, me.pid, me.create_time())
    assert settings.tracking_uri() == "http://127.0.0.1:5999"


@pytest.mark.parametrize("why", ["pid reused by another process", "hardened profile", "unreadable"])
def test_a_dead_hardened_or_broken_stack_state_falls_back_to_sqlite(root: Path, why: str) -> None:
    me = psutil.Process(os.getpid())
    if why == "pid reused by another process":
        write_state(root, me.pid, me.create_time() - 100)
    elif why == "hardened profile":
        write_state(root, me.pid, me.create_time(), auth=True)
    else:
        (root / ".conveyor").mkdir()
        (root / ".conveyor" / "stack.json").write_text("{not json")
    assert settings.tracking_uri().startswith("sqlite:///")


def test_the_environment_wins_over_a_running_stack(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = psutil.Process(os.getpid())
    write_state(root, me.pid, me.create_time())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert settings.tracking_uri() == "sqlite:////elsewhere/mlflow.db"
