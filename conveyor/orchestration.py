"""Prefect-side guarantees that the flows rely on: one training run per model, findable runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from conveyor.errors import retry_unless_expected

logger = logging.getLogger(__name__)

# Options for tasks that read files or talk to the tracking store: retry I/O hiccups, never an
# expected failure; never cache on their inputs (frames and paths hash slowly or wrongly).
IO_TASK: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [2, 5],
    "retry_condition_fn": retry_unless_expected,
    "cache_policy": NO_CACHE,
}

# How long a second training run of the same model waits for the first before it fails.
SLOT_TIMEOUT_SECONDS = 6 * 3600


def slot_name(model: str) -> str:
    return f"train-{model}"


@contextlib.contextmanager
def model_slot(model: str, timeout_seconds: float = SLOT_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the model's training slot (a Prefect global concurrency limit of 1) for the block.

    A second run of the same model waits, visibly, in Running until the first one is done.
    """
    name = slot_name(model)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit=1)
    logger.info("waiting for the training slot %r", name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        yield


def run_tags(model: str) -> None:
    """Tag the current flow run `model:<name>` so the UI can filter runs by model."""
    run_id = flow_run.id
    if not run_id:
        return
    tag = f"model:{model}"
    current = set(flow_run.tags or [])
    if tag in current:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(run_id, tags=sorted(current | {tag}))
