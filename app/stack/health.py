"""Whether each service is ready: Prefect's API and worker through Prefect's own client, MLflow's /health."""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.stack.config import POOL, WORKER_NAME, StackConfig

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


@contextlib.contextmanager
def prefect_client(api_url: str, *, timeout: float = 10.0, probe: bool = False) -> Iterator[SyncPrefectClient]:
    """Prefect's synchronous client for `api_url`: the one `get_client(sync_client=True)` builds.

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
        api_url, auth_string=PREFECT_API_AUTH_STRING.value(), api_key=PREFECT_API_KEY.value(), httpx_settings=settings
    )
    with client:
        yield client


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Loaded once: building a context (reading the CA bundle) costs more CPU than the probe itself."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def prefect_api_healthy(api_url: str) -> bool:
    with prefect_client(api_url, timeout=2, probe=True) as client:
        return client.api_healthcheck() is None


def prefect_healthy(config: StackConfig) -> bool:
    return prefect_api_healthy(config.prefect_api_url)


def mlflow_healthy(config: StackConfig) -> bool:
    """MLflow's /health answers 200 (plain HTTP: MLflow has no client call for it)."""
    import httpx

    try:
        return httpx.get(f"{config.mlflow_url}/health", timeout=2, verify=_tls_context()).status_code == 200
    except httpx.HTTPError:
        return False


def worker_online(config: StackConfig) -> bool:
    """The worker registered with the pool and its heartbeat is current."""
    import httpx

    with prefect_client(config.prefect_api_url, timeout=2, probe=True) as client:
        try:
            workers = client.read_workers_for_work_pool(POOL)
        except httpx.HTTPError:  # not answering yet, or an error status (Prefect's is a subclass)
            return False
    return any(worker.name == WORKER_NAME and worker.status == "ONLINE" for worker in workers)


def ensure_work_pool(api_url: str) -> None:
    """Create the process work pool (with the process worker's default job template) if missing."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with prefect_client(api_url) as client:
        try:
            client.read_work_pool(POOL)
            return  # the common case, without importing Prefect's worker machinery
        except ObjectNotFound:
            pass
        from prefect.workers.process import ProcessWorker

        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(
                WorkPoolCreate(
                    name=POOL,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="Conveyor's local process pool (created by `conveyor up`).",
                )
            )
