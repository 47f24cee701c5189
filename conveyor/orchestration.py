"""Prefect-side guarantees that the flows rely on: one training run per model, findable runs."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from conveyor import locks
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


def slot_timeout() -> float:
    """How long a training run waits for another run of the same model (`CONVEYOR_SLOT_TIMEOUT_SECONDS`)."""
    return float(os.environ.get("CONVEYOR_SLOT_TIMEOUT_SECONDS", "3600"))


@contextlib.contextmanager
def model_slot(model: str, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the model's training slot for the block: one training run per model and project.

    The slot dies with its holder (see conveyor.locks); a run that waits says who holds it, and
    gives up with a clear error after the timeout.
    """
    from conveyor import registry

    what = f"training {model}" + (f" (Prefect flow run {flow_run.id})" if flow_run.id else "")
    with locks.model_lock(
        "train",
        model,
        slot_timeout() if timeout_seconds is None else timeout_seconds,
        what,
        holder=lambda: registry.running_training(model),
    ):
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
