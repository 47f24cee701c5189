"""The hardened profile (`CONVEYOR_AUTH=1 conveyor up`): both servers refuse strangers, the worker and the CLI work.

A stack of its own, started with the real CLI in a copy of the project on free ports; nothing
here imports the stack's code: only the files `up` writes (`.conveyor/auth.json`, `auth.env`)
and the servers' HTTP APIs.
"""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.harness import CONVEYOR, ON_DEMAND, Stack, new_stack, process_tree, stop, wait_until
from tests.factories import classification_frame, write_csv, write_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "guarded"
UP_TIMEOUT = "600"  # the harness's `up` waits 180 s: too short for a first start beside other tests


def start(stack: Stack) -> Stack:
    """`CONVEYOR_AUTH=1 conveyor up`; its processes are remembered for `stop` to check."""
    result = stack.cli("up", "--timeout", UP_TIMEOUT, timeout=900)
    if result.returncode != 0:
        stack.cli("down")
        raise AssertionError(f"conveyor up failed ({result.returncode}): {result.stderr}\n{stack.logs()[-3000:]}")
    assert "the stack is up (sqlite, auth)" in result.stdout, result.stdout
    stack.remember_pids()
    return stack


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = new_stack(tmp_path_factory.mktemp("auth") / "project")
    write_csv(stack.root, "data/guarded.csv", classification_frame(rows=300, seed=5))
    write_spec(stack.root, MODEL, "../data/guarded.csv", **ON_DEMAND)
    stack.env["CONVEYOR_AUTH"] = "1"
    try:
        yield start(stack)
    finally:
        if stack.running:
            stop(stack)


def secrets_of(stack: Stack) -> dict[str, str]:
    return json.loads((stack.root / ".conveyor" / "auth.json").read_text())


def sourced_env(stack: Stack) -> dict[str, str]:
    """The environment a user has after `source .conveyor/auth.env` (the file `up` told them to source)."""
    script = f"source {shlex.quote(str(stack.root / '.conveyor' / 'auth.env'))} && env -0"
    out = subprocess.run(["bash", "-c", script], env=stack.env, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def mlflow_requests(stack: Stack) -> list[tuple[str, str, dict[str, Any] | None]]:
    """A reading route and a writing route of MLflow's REST API."""
    return [
        ("GET", f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=5", None),
        ("POST", f"{stack.mlflow_url}/api/2.0/mlflow/experiments/create", {"name": "written-by-a-stranger"}),
    ]


def prefect_requests(stack: Stack) -> list[tuple[str, str, dict[str, Any] | None]]:
    """A reading route and a writing route of Prefect's REST API."""
    return [
        ("POST", f"{stack.api_url}/flows/filter", {"limit": 5}),
        ("POST", f"{stack.api_url}/flows/", {"name": "written-by-a-stranger"}),
    ]


def send(method: str, url: str, body: dict[str, Any] | None, **auth: Any) -> httpx.Response:
    return httpx.request(method, url, json=body, timeout=30, **auth)


def test_up_says_what_to_source_and_never_prints_a_secret(hardened: Stack) -> None:
    again = hardened.cli("up")
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout and "source " in again.stdout and "auth.env" in again.stdout
    output = again.stdout + again.stderr + (hardened.root / ".conveyor" / "logs" / "deploy.log").read_text()
    for secret in secrets_of(hardened).values():
        if secret != "admin":
            assert secret not in output


@pytest.mark.parametrize("server", ["mlflow", "prefect"])
def test_a_stranger_is_refused_on_reading_and_writing_routes(hardened: Stack, server: str) -> None:
    requests = mlflow_requests(hardened) if server == "mlflow" else prefect_requests(hardened)
    for method, url, body in requests:
        assert send(method, url, body).status_code == 401, (method, url)
        wrong = send(method, url, body, auth=("admin", "password1234"))  # MLflow's old default password
        assert wrong.status_code == 401, (method, url)


def test_the_same_requests_with_the_stored_credentials_succeed(hardened: Stack) -> None:
    secrets = secrets_of(hardened)
    mlflow_auth = (secrets["mlflow_username"], secrets["mlflow_password"])
    prefect_user, prefect_password = secrets["prefect_auth_string"].split(":", 1)
    for method, url, body in mlflow_requests(hardened):
        answer = send(method, url, body, auth=mlflow_auth)
        assert answer.status_code == 200, (method, url, answer.text)
    for method, url, body in prefect_requests(hardened):
        answer = send(method, url, body, auth=(prefect_user, prefect_password))
        assert answer.status_code in (200, 201), (method, url, answer.text)


def test_a_changed_password_and_a_deleted_user_are_refused_at_once(hardened: Stack) -> None:
    """MLflow trusts a checked credential for a while (Conveyor turns its cache on): a password
    changed or a user deleted through the API must still be refused on the very next request."""
    secrets = secrets_of(hardened)
    admin = (secrets["mlflow_username"], secrets["mlflow_password"])
    users = f"{hardened.mlflow_url}/api/2.0/mlflow/users"
    search = f"{hardened.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    created = send("POST", f"{users}/create", {"username": "analyst", "password": "first-pass-9f2k"}, auth=admin)
    assert created.status_code == 200, created.text
    assert send("GET", search, None, auth=("analyst", "first-pass-9f2k")).status_code == 200  # now cached

    body = {"username": "analyst", "password": "second-pass-7h3m"}
    assert send("PATCH", f"{users}/update-password", body, auth=admin).status_code == 200
    assert send("GET", search, None, auth=("analyst", "first-pass-9f2k")).status_code == 401
    assert send("GET", search, None, auth=("analyst", "second-pass-7h3m")).status_code == 200  # now cached

    assert send("DELETE", f"{users}/delete", {"username": "analyst"}, auth=admin).status_code == 200
    assert send("GET", search, None, auth=("analyst", "second-pass-7h3m")).status_code == 401


def test_secrets_are_owner_only_and_on_no_command_line_nor_in_stack_json(hardened: Stack) -> None:
    state_dir = hardened.root / ".conveyor"
    for name in ("auth.json", "auth.env"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700  # the stores on disk bypass both servers
    secrets = [value for key, value in secrets_of(hardened).items() if key != "mlflow_username"]
    stack_json = (state_dir / "stack.json").read_text()
    assert json.loads(stack_json)["auth"] is True
    pids = {pid for service in hardened.state()["services"].values() for pid in process_tree(service["pid"])}
    assert len(pids) >= 3
    command_lines = []
    for pid in pids:
        try:
            command_lines.append(" ".join(psutil.Process(pid).cmdline()))
        except psutil.NoSuchProcess:
            continue
    assert any("basic-auth" in line for line in command_lines)  # the MLflow server runs the auth app
    for secret in secrets:
        assert secret not in stack_json
        assert not any(secret in line for line in command_lines)


def test_a_training_run_through_the_worker_completes(hardened: Stack) -> None:
    """The worker's flow runs reach both servers with the credentials it was given."""
    env = sourced_env(hardened)
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(hardened.api_url, auth_string=env["PREFECT_API_AUTH_STRING"]) as client:
        deployment = client.read_deployment_by_name(f"training/train-{MODEL}")
        run = client.create_flow_run_from_deployment(deployment.id)

    def final() -> Any:
        with SyncPrefectClient(hardened.api_url, auth_string=env["PREFECT_API_AUTH_STRING"]) as client:
            current = client.read_flow_run(run.id)
        return current if current.state is not None and current.state.is_final() else None

    finished = wait_until(final, 900, f"flow run {run.id} final", every=0.5)
    assert finished.state.is_completed(), f"{finished.state}\n{hardened.tail()}"
    versions = mlflow_versions(hardened, env)
    assert versions, "the run registered no version"


def mlflow_versions(stack: Stack, env: dict[str, str]) -> list[str]:
    secrets = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    answer = httpx.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'"},
        auth=secrets,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return [version["version"] for version in answer.json().get("model_versions", [])]


def test_the_cli_trains_against_the_stack_with_the_sourced_environment(hardened: Stack) -> None:
    env = sourced_env(hardened)
    before = mlflow_versions(hardened, env)
    trained = subprocess.run(
        [CONVEYOR, "train", f"pipelines/{MODEL}.yaml"],
        cwd=hardened.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert mlflow_versions(hardened, env) != before or "nothing to do" in trained.stdout + trained.stderr
    status = subprocess.run([CONVEYOR, "status"], cwd=hardened.root, env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr


def test_without_the_credentials_the_cli_is_refused(hardened: Stack) -> None:
    env = {k: v for k, v in sourced_env(hardened).items() if k not in ("MLFLOW_TRACKING_PASSWORD",)}
    refused = subprocess.run(
        [CONVEYOR, "show", MODEL], cwd=hardened.root, env=env, capture_output=True, text=True, timeout=300
    )
    assert refused.returncode != 0


def test_credentials_survive_down_and_up(hardened: Stack) -> None:
    before = secrets_of(hardened)
    stop(hardened)
    start(hardened)
    assert secrets_of(hardened) == before
    env = sourced_env(hardened)
    assert mlflow_versions(hardened, env)  # the same admin password still opens the same store
    path = Path(hardened.root / ".conveyor" / "stack.json")
    assert json.loads(path.read_text())["auth"] is True
