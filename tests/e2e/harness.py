"""A real stack for the e2e tier: `conveyor up` in a throwaway copy of the project, on free ports.

The stack is driven only through what a user has: the `conveyor` command, the Prefect and MLflow
APIs on their ports, and the files under `.conveyor/`. Nothing here imports the stack's code; the
ports come from `conveyor.ports` (outside the ephemeral range, so no client connection takes one first).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CONVEYOR = str(Path(sys.executable).parent / "conveyor")
# What a checkout needs for `prefect deploy` and for the worker to run the flows.
COPIED = ("app", "conveyor", "flows", "tasks", "pipelines", "prefect.yaml", "pyproject.toml")
# The models tests train run only when a test asks: no schedule (a stack up across 02:00 UTC
# would otherwise train them behind the tests' backs) and no retraining on the watch flow's
# schedule. NIGHTLY keeps the default nightly schedule for the tests that check it; it has no
# data, so its scheduled runs change nothing.
ON_DEMAND: dict[str, Any] = {"schedule": {"cron": None}, "monitoring": {"retrain_on": []}}
NIGHTLY = "nightly"


def port_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def process_tree(pid: int) -> set[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def copy_project(root: Path) -> Path:
    """The project's code, deployments and bundled specs in `root` (no data, no stores), and NIGHTLY."""
    from tests.factories import write_spec

    root.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_file():
            shutil.copy2(source, root / name)
    write_spec(root, NIGHTLY, "../data/nightly/*.csv", monitoring={"retrain_on": []})
    return root


def clean_env() -> dict[str, str]:
    """This process's environment without any Prefect, MLflow or Conveyor setting of the session."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}


def wait_until(condition: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll `condition()` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached after {timeout:.0f}s: {what}")
        time.sleep(every)


@dataclass
class Stack:
    """A stack started with the real CLI in a copy of the project."""

    root: Path
    env: dict[str, str]
    prefect_port: int
    mlflow_port: int
    database_url: str | None = None
    database_prefix: str | None = None
    pids: set[int] = field(default_factory=set)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def running(self) -> bool:
        return (self.root / ".conveyor" / "stack.json").exists()

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CONVEYOR, *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / ".conveyor" / "stack.json").read_text())

    def remember_pids(self) -> None:
        """Every process of the stack now, so that `down` can be checked to leave none."""
        for service in self.state()["services"].values():
            self.pids.update(process_tree(service["pid"]))

    def prefect(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def mlflow(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)

    def run_deployment(self, name: str, parameters: dict[str, Any] | None = None) -> Any:
        """What the UI's Run button does: a flow run created from the deployment, Scheduled now."""
        with self.prefect() as client:
            deployment = client.read_deployment_by_name(name)
            return client.create_flow_run_from_deployment(deployment.id, parameters=parameters)

    def wait_final(self, run_ids: list[Any], timeout: float = 900) -> list[Any]:
        with self.prefect() as client:

            def final() -> list[Any] | None:
                runs = [client.read_flow_run(run_id) for run_id in run_ids]
                return runs if all(run.state is not None and run.state.is_final() for run in runs) else None

            try:
                return wait_until(final, timeout, f"flow runs {run_ids} final", every=0.25)
            except AssertionError as exc:
                pending = [f"{run.name}: {run.state_name}" for run in (client.read_flow_run(i) for i in run_ids)]
                raise AssertionError(f"{exc}: {pending}\n{self.tail()}") from None

    def run_logs(self, flow_run_id: Any) -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with self.prefect() as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        return "\n".join(log.message for log in logs)

    def tail(self, lines: int = 40) -> str:
        worker_log = self.root / ".conveyor" / "logs" / "worker.log"
        text = worker_log.read_text(errors="replace") if worker_log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        folder = self.root / ".conveyor" / "logs"
        return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("*.log")))


def new_stack(root: Path, database_url: str | None = None) -> Stack:
    """A copied project with its ports and environment chosen, not started yet."""
    copy_project(root)
    env = clean_env()
    stack = Stack(root=root, env=env, prefect_port=0, mlflow_port=0)
    choose_ports(stack)
    env.update(
        CONVEYOR_HOME=str(root),
        PREFECT_HOME=str(root / ".conveyor" / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GX_ANALYTICS_ENABLED="false",
        OMP_NUM_THREADS="1",
    )
    if database_url:
        stack.database_url = database_url
        stack.database_prefix = f"conveyor_test_{uuid.uuid4().hex[:10]}"
        env.update(CONVEYOR_DATABASE_URL=database_url, CONVEYOR_DATABASE_PREFIX=stack.database_prefix)
    return stack


def choose_ports(stack: Stack) -> None:
    """Free ports for the stack's Prefect, MLflow and serving servers."""
    stack.prefect_port, stack.mlflow_port = free_port(), free_port()
    stack.env.update(
        CONVEYOR_PREFECT_PORT=str(stack.prefect_port),
        CONVEYOR_MLFLOW_PORT=str(stack.mlflow_port),
        CONVEYOR_SERVING_PORT=str(free_port()),
    )


def start(stack: Stack) -> Stack:
    """`conveyor up`, which must print both addresses; its processes are remembered.

    The ports were chosen free when the stack was made, but the servers bind them up to a minute
    later, and the other xdist worker starts servers too (seen: SeaweedFS's volume server took the
    serving port). `up` then fails naming the port, before or after starting; the harness chooses new
    ports and tries once more.
    """
    for attempt in (1, 2):
        # The default 180 s is for a person; a loaded 2-core CI machine can need longer to start them all.
        result = stack.cli("up", "--timeout", "600", timeout=900)
        if result.returncode == 0:
            break
        stack.cli("down")
        said = result.stderr + stack.logs()
        if attempt == 2 or not any(taken in said for taken in ("address already in use", "is in use; free it")):
            raise AssertionError(f"conveyor up failed ({result.returncode}): {result.stderr}\n{stack.logs()[-3000:]}")
        choose_ports(stack)
    assert f"Prefect UI: http://127.0.0.1:{stack.prefect_port}" in result.stdout, result.stdout
    assert f"MLflow UI:  http://127.0.0.1:{stack.mlflow_port}" in result.stdout, result.stdout
    stack.remember_pids()
    return stack


def stop(stack: Stack) -> None:
    """`conveyor down`, then check that every service stopped on SIGTERM (SeaweedFS's planned
    SIGKILL is not reported) and that no process of the stack and none of its ports is left."""
    if stack.running:
        stack.remember_pids()
    result = stack.cli("down")
    assert result.returncode == 0, result.stderr
    assert "ignored SIGTERM" not in result.stderr, result.stderr
    left = sorted(pid for pid in stack.pids if alive(pid))
    assert not left, f"processes left after down: {left}"
    assert not port_listening(stack.prefect_port)
    assert not port_listening(stack.mlflow_port)
    assert not stack.running


def drop_databases(stack: Stack) -> None:
    """Remove the PostgreSQL databases a profile created (none for SQLite)."""
    if not (stack.database_url and stack.database_prefix):
        return
    import psycopg

    with psycopg.connect(stack.database_url, autocommit=True, connect_timeout=5) as conn:
        for suffix in ("prefect", "mlflow"):
            conn.execute(f'DROP DATABASE IF EXISTS "{stack.database_prefix}_{suffix}" WITH (FORCE)')
