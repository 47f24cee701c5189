"""Whether each service is ready: Prefect's API and worker through Prefect's own client, MLflow's /health."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from app.stack.config import POOL, WORKER_NAME, StackConfig

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


@contextlib.contextmanager
def prefect_client(api_url: str, *, timeout: float = 10.0, retries: int | None = None) -> Iterator[SyncPrefectClient]:
    """Prefect's synchronous client for `api_url`, whatever PREFECT_API_URL says.

    Health probes pass `retries=0`: a server that is still starting must answer no at once.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    updates: dict[object, object] = {PREFECT_API_URL: api_url}
    if retries is not None:
        updates[PREFECT_CLIENT_MAX_RETRIES] = retries
    with (
        temporary_settings(updates),  # type: ignore[arg-type]
        get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client,
    ):
        yield client


def prefect_api_healthy(api_url: str) -> bool:
    with prefect_client(api_url, timeout=2, retries=0) as client:
        return client.api_healthcheck() is None


def prefect_healthy(config: StackConfig) -> bool:
    return prefect_api_healthy(config.prefect_api_url)


def mlflow_healthy(config: StackConfig) -> bool:
    """MLflow's /health answers 200 (plain HTTP: MLflow has no client call for it)."""
    import httpx

    try:
        return httpx.get(f"{config.mlflow_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def worker_online(config: StackConfig) -> bool:
    """The worker registered with the pool and its heartbeat is current."""
    import httpx

    with prefect_client(config.prefect_api_url, timeout=2, retries=0) as client:
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
