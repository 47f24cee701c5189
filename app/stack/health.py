"""Whether each service is ready: Prefect's API and worker through Prefect's own client, MLflow's /health.

On the hardened profile every check but the health probes (which both servers leave open)
sends the stored credentials, so a stack whose secrets do not match is not called healthy.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.stack.auth import stack_credentials
from app.stack.config import POOL, WORKER_NAME, StackConfig, StackError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


@contextlib.contextmanager
def prefect_client(
    api_url: str, *, timeout: float = 10.0, probe: bool = False, auth_string: str | None = None
) -> Iterator[SyncPrefectClient]:
    """Prefect's synchronous client for `api_url`: the one `get_client(sync_client=True)` builds.

    It sends `auth_string`, else PREFECT_API_AUTH_STRING from the settings (the environment).

    `get_client` reads the URL from the settings only; overriding them per call
    (`temporary_settings`) costs about 80 ms of CPU, too much for a probe polled five times a
    second. A probe (`probe=True`) reuses one TLS context and skips the transport's three
    connect retries (1.5 s of sleeping): a server that is still starting must answer no at once.
    """
    import httpx
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    settings: dict[str, Any] = {"timeout": timeout}
    if probe:
        settings["verify"] = _tls_context()
        settings["transport"] = httpx.HTTPTransport(verify=settings["verify"], retries=0)
    client = SyncPrefectClient(
        api_url,
        auth_string=auth_string or PREFECT_API_AUTH_STRING.value(),
        api_key=PREFECT_API_KEY.value(),
        httpx_settings=settings,
    )
    with client:
        yield client


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Loaded once: building a context (reading the CA bundle) costs more CPU than the probe itself."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def stack_auth_string(config: StackConfig) -> str | None:
    """The Prefect API auth string of a hardened stack, None on the open profile."""
    return stack_credentials(config).prefect_auth_string if config.auth else None


def prefect_api_healthy(api_url: str, auth_string: str | None = None) -> bool:
    """/health answers; with an auth string, an authenticated call must pass too (else StackError)."""
    import httpx

    with prefect_client(api_url, timeout=2, probe=True, auth_string=auth_string) as client:
        if client.api_healthcheck() is not None:
            return False
        if auth_string is None:
            return True
        try:
            client.hello()  # /health is open to all: this call is not
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 401:
                raise StackError(f"the Prefect API at {api_url} refuses the stored auth string") from None
            return False
        except httpx.HTTPError:
            return False
    return True


def prefect_healthy(config: StackConfig) -> bool:
    return prefect_api_healthy(config.prefect_api_url, stack_auth_string(config))


def mlflow_healthy(config: StackConfig) -> bool:
    """MLflow's /health answers 200 (plain HTTP: MLflow has no client call for it).

    /health is open on the basic-auth app too: on the hardened profile a search with the stored
    credentials must also answer 200, and a 401 is an error, not "not ready yet".
    """
    import httpx

    try:
        if httpx.get(f"{config.mlflow_url}/health", timeout=2, verify=_tls_context()).status_code != 200:
            return False
        if not config.auth:
            return True
        credentials = stack_credentials(config)
        response = httpx.get(
            f"{config.mlflow_url}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=(credentials.mlflow_username, credentials.mlflow_password),
            timeout=5,
            verify=_tls_context(),
        )
    except httpx.HTTPError:
        return False
    if response.status_code == 401:
        raise StackError(f"the MLflow server at {config.mlflow_url} refuses the credentials in {config.auth_file}")
    return response.status_code == 200


def worker_online(config: StackConfig) -> bool:
    """The worker registered with the pool and its heartbeat is current."""
    import httpx

    with prefect_client(config.prefect_api_url, timeout=2, probe=True, auth_string=stack_auth_string(config)) as client:
        try:
            workers = client.read_workers_for_work_pool(POOL)
        except httpx.HTTPError:  # not answering yet, or an error status (Prefect's is a subclass)
            return False
    return any(worker.name == WORKER_NAME and worker.status == "ONLINE" for worker in workers)


# What a flow run of the pool runs: the engine itself, with the `python` first on the worker's PATH
# (the stack's worker gets the venv's bin first: services.worker_env). Without a command, Prefect
# 3.9's process worker starts a workspace supervisor process that then starts the engine, about
# 1.3 CPU-seconds more per run (benchmarks/bench_worker_run.py).
FLOW_RUN_COMMAND = "python -m prefect.engine"


def ensure_work_pool(api_url: str, auth_string: str | None = None) -> None:
    """Create the process work pool if missing: the process worker's default job template, its
    command the engine (FLOW_RUN_COMMAND). A pool made by an earlier `up` with no command gets it;
    a command someone set on the pool is left alone."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with prefect_client(api_url, auth_string=auth_string) as client:
        try:
            template = client.read_work_pool(POOL).base_job_template
        except ObjectNotFound:
            template = None
        if template is not None:  # the common case, without importing Prefect's worker machinery
            command = template.get("variables", {}).get("properties", {}).get("command")
            if command is not None and command.get("default") is None:
                command["default"] = FLOW_RUN_COMMAND
                client.update_work_pool(POOL, WorkPoolUpdate(base_job_template=template))
            return
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        template["variables"]["properties"]["command"]["default"] = FLOW_RUN_COMMAND
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(
                WorkPoolCreate(
                    name=POOL,
                    type="process",
                    base_job_template=template,
                    description="Conveyor's local process pool (created by `conveyor up`).",
                )
            )
