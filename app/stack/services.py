"""What each service of the stack runs: its command line and its environment.

No secret goes on a command line (anyone on the machine can read those): database URLs reach the
servers through their environment, and a one-shot command that takes a URL argument gets it
without the password, which it reads from PGPASSWORD. On the hardened profile (CONVEYOR_AUTH=1)
the credentials of `.conveyor/auth.json` travel the same way, in the environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.stack.auth import allowed_hosts, allowed_origins, stack_credentials
from app.stack.config import HOST, POOL, WORKER_NAME, StackConfig, without_password
from app.stack.processes import bin_path
from app.stack.scaled import ARTIFACTS_DESTINATION, ONE_THREAD, extra_commands, s3_client_env


def base_env(config: StackConfig) -> dict[str, str]:
    """The parent's environment minus pointers at other servers, plus the stack's own settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        # inherited pointers at some other server would leak into the stack's processes
        if not key.startswith(("PREFECT_", "MLFLOW_"))
    }
    env.update(
        CONVEYOR_HOME=str(config.root),
        PREFECT_HOME=str(config.prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_API_URL=config.prefect_api_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def prefect_server_env(config: StackConfig) -> dict[str, str]:
    env = base_env(config)
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=config.prefect_database_url(),
        PREFECT_UI_API_URL=config.prefect_api_url,
        # A queued run (deployment concurrency limit) retries for its slot every 5 s, not 30 s.
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="5",
    )
    if config.auth:
        env["PREFECT_SERVER_API_AUTH_STRING"] = stack_credentials(config).prefect_auth_string
    return env


def mlflow_env(config: StackConfig) -> dict[str, str]:
    env = base_env(config)
    env.update(
        MLFLOW_BACKEND_STORE_URI=config.mlflow_backend_uri(),  # `mlflow server --backend-store-uri`
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    if password := config.database_password:
        env["PGPASSWORD"] = password
    if config.s3:  # `--artifacts-destination s3://...`: the server alone talks to the store
        env.update(s3_client_env(config), MLFLOW_S3_ENDPOINT_URL=str(config.s3_endpoint_url))
    if config.auth:
        credentials = stack_credentials(config)
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(config.mlflow_auth_config),
            # Used only while the user store has no admin (the first start); ignored afterwards.
            MLFLOW_AUTH_ADMIN_PASSWORD=credentials.mlflow_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=credentials.flask_secret_key,
        )
    return env


def worker_env(config: StackConfig) -> dict[str, str]:
    """The worker's environment, inherited by every flow run it starts."""
    env = base_env(config)
    env.update(PREFECT_WORKER_QUERY_SECONDS="2", MLFLOW_TRACKING_URI=config.mlflow_url)
    # The pool's flow runs are `python -m prefect.engine` (health.FLOW_RUN_COMMAND): this venv's python.
    env["PATH"] = os.pathsep.join(filter(None, (str(Path(sys.executable).parent), env.get("PATH"))))
    if config.dask_address:  # the flows' fan-outs run on the stack's Dask cluster
        env["CONVEYOR_DASK_ADDRESS"] = config.dask_address
    if config.s3:  # `s3://` data paths and prediction logs
        env.update(s3_client_env(config))
    if config.auth:
        credentials = stack_credentials(config)
        env.update(
            PREFECT_API_AUTH_STRING=credentials.prefect_auth_string,
            MLFLOW_TRACKING_USERNAME=credentials.mlflow_username,
            MLFLOW_TRACKING_PASSWORD=credentials.mlflow_password,
        )
    return env


def dask_env(config: StackConfig) -> dict[str, str]:
    """The Dask processes' environment: the flow runs' own (their tasks run there), one thread each."""
    env = worker_env(config)
    env.pop("CONVEYOR_DASK_ADDRESS", None)  # a task on the cluster never fans out onto it again
    env.update(ONE_THREAD)
    # The project's code, as the flow runs import it from the project root.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(config.root), os.environ.get("PYTHONPATH"))))
    return env


def deploy_env(config: StackConfig, api_url: str | None = None) -> dict[str, str]:
    env = base_env(config)
    env["PREFECT_API_URL"] = api_url or config.prefect_api_url
    if config.auth:
        env["PREFECT_API_AUTH_STRING"] = stack_credentials(config).prefect_auth_string
    elif auth_string := os.environ.get("PREFECT_API_AUTH_STRING"):
        env["PREFECT_API_AUTH_STRING"] = auth_string  # `conveyor deploy` to a server of the user's choosing
    return env


def commands(config: StackConfig) -> dict[str, list[str]]:
    """The long-running services' command lines."""
    # Clients get `mlflow-artifacts:/` URIs and send the files through the server, so a runner on
    # another machine stores what it logs where the server keeps it: .conveyor/artifacts, or S3.
    artifacts = ARTIFACTS_DESTINATION if config.s3 else str(config.artifacts_dir)
    hardened = (
        ["--app-name", "basic-auth", "--allowed-hosts", allowed_hosts(config.mlflow_port),
         "--cors-allowed-origins", allowed_origins(config.mlflow_port)]
        if config.auth else []
    )  # fmt: skip
    return {
        "prefect-server": [
            bin_path("prefect"), "server", "start", "--host", HOST,
            "--port", str(config.prefect_port), "--analytics-off",
        ],
        "mlflow-server": [
            bin_path("mlflow"), "server", "--host", HOST, "--port", str(config.mlflow_port), "--workers", "1",
            "--artifacts-destination", artifacts, *hardened,
        ],
        "worker": [
            bin_path("prefect"), "worker", "start", "--pool", POOL, "--type", "process",
            "--name", WORKER_NAME, "--no-create-pool-if-not-found",
        ],
        **extra_commands(config),
    }  # fmt: skip


def mlflow_upgrade_command(config: StackConfig) -> list[str]:
    """`mlflow db upgrade <uri>`: the URI without its password (mlflow_env sets PGPASSWORD)."""
    return [bin_path("mlflow"), "db", "upgrade", without_password(config.mlflow_backend_uri())]


def prefect_deploy_command() -> list[str]:
    return [bin_path("prefect"), "--no-prompt", "deploy", "--all"]
