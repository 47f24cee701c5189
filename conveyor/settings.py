"""Where Conveyor keeps its state. Read from the environment on every call, never at import."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """`CONVEYOR_HOME`, else the nearest ancestor of the working directory holding `pipelines/`."""
    if home := os.environ.get("CONVEYOR_HOME"):
        return Path(home).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pipelines").is_dir():
            return folder
    return cwd


def state_dir() -> Path:
    """The git-ignored folder holding the embedded stores, logs and prediction logs."""
    path = project_root() / ".conveyor"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`; else the MLflow server of the project's running stack (`make up`), so
    the CLI reads the artifacts it serves (`mlflow-artifacts:/`); else a SQLite store at
    `.conveyor/mlflow.db` (four slashes: absolute)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    return running_stack_mlflow() or f"sqlite:///{state_dir() / 'mlflow.db'}"


def running_stack_mlflow() -> str | None:
    """The MLflow server `conveyor up` started for this project, when its process is alive and the
    stack is not the hardened profile (whose credentials a shell takes from `.conveyor/auth.env`)."""
    import json

    from conveyor.process_identity import is_process, recorded_start

    path = project_root() / ".conveyor" / "stack.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        service = state["services"]["mlflow-server"]
        alive = is_process(int(service["pid"]), recorded_start(service))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    url = state.get("mlflow_url")
    return url if alive and isinstance(url, str) and not state.get("auth") else None


def artifact_root() -> str:
    """Artifact root for new experiments: `CONVEYOR_ARTIFACT_ROOT`, else `.conveyor/artifacts`."""
    if root := os.environ.get("CONVEYOR_ARTIFACT_ROOT"):
        return root
    return str(state_dir() / "artifacts")


def pipelines_dir() -> Path:
    return project_root() / "pipelines"


def user_path(path: str, base: Path | None = None) -> str:
    """A path a person typed: absolute or a URI as is, else relative to `base` (the working
    directory for the CLI) or, without one, to the project root (deployments and triggers)."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(((base or project_root()) / path).resolve())


def masked(url: str) -> str:
    """A URL with its password replaced by ***, for messages and logs."""
    import re

    return re.sub(r"(://[^:/@]+:)[^/]*@", r"\1***@", url)
