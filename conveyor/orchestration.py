"""Prefect-side guarantees that the flows rely on: one training run per model, findable runs."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

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


def worker_count() -> int:
    """How many things run at once in a fan-out: `CONVEYOR_WORKERS`, else the machine's cores."""
    configured = os.environ.get("CONVEYOR_WORKERS", "").strip()
    if configured:
        return max(1, int(configured))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def use_dask(dask: bool | None = None) -> bool:
    """Whether fan-outs run on Dask: asked for (`--dask`, `CONVEYOR_DASK=1`) or a cluster is named."""
    if os.environ.get("CONVEYOR_DASK_ADDRESS"):
        return True
    if dask is not None:
        return dask
    return os.environ.get("CONVEYOR_DASK", "").strip().lower() in {"1", "true", "yes", "on"}


def fanout_task_runner(dask: bool | None = None, max_workers: int | None = None) -> TaskRunner[Any]:
    """The task runner for a fan-out (segments, specs, search candidates); never unbounded.

    - `CONVEYOR_DASK_ADDRESS=tcp://host:8786` set: a `DaskTaskRunner` on that existing cluster.
    - `dask=True` or `CONVEYOR_DASK=1`: a `DaskTaskRunner` on a `LocalCluster` of worker
      processes with one thread each and OpenMP at 1 thread, `max_workers` (default
      `CONVEYOR_WORKERS`, else the cores) of them, so the cores are not oversubscribed.
    - otherwise: a `ThreadPoolTaskRunner` of `max_workers` threads.

    Use it as `my_flow.with_options(task_runner=fanout_task_runner())(...)`. Tasks on Dask
    workers run in other processes: pass them plain picklable values (paths, names, frames) and
    let them open their own MLflow client (`conveyor.registry` does, from the environment).
    """
    workers = max_workers or worker_count()
    if not use_dask(dask):
        return ThreadPoolTaskRunner(max_workers=workers)
    from prefect_dask import DaskTaskRunner

    address = os.environ.get("CONVEYOR_DASK_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=_local_cluster_kwargs(workers))


def _local_cluster_kwargs(workers: int) -> dict[str, Any]:
    return {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",  # a free port, never the well-known 8787
        "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    }


def wants_local_cluster(dask: bool | None = None) -> bool:
    """Whether a fan-out would start a `LocalCluster` of its own (Dask asked for, none named)."""
    return use_dask(dask) and not os.environ.get("CONVEYOR_DASK_ADDRESS")


# A fan-out of at least this many CPU-bound pieces (segment models) goes to a LocalCluster of its
# own when CONVEYOR_DASK is not set: small scikit-learn fits hold the GIL, so a thread pool uses
# about one core whatever its size (benchmarks/bench_gil.py), while the cluster's few seconds of
# start are repaid within tens of models (1,000 segment models: 511 s on threads, 308 s on a
# 2-worker cluster; benchmarks/bench_fleet.py).
AUTO_DASK_TASKS = 100


def auto_local_cluster(tasks: int) -> bool:
    """Whether a fan-out of `tasks` pieces gets a `LocalCluster` though none was asked for:
    `CONVEYOR_DASK` unset (`0` keeps threads), no cluster named, more than one worker, and at
    least `AUTO_DASK_TASKS` pieces."""
    unset = os.environ.get("CONVEYOR_DASK", "").strip() == "" and not os.environ.get("CONVEYOR_DASK_ADDRESS")
    return unset and tasks >= AUTO_DASK_TASKS and worker_count() > 1


class FanoutCluster:
    """A Dask `LocalCluster` for one flow's fan-out, started in a background thread: at the flow's
    start when Dask was asked for, so that the start (a few seconds of worker processes importing
    `warm`, the modules their first task needs) overlaps the flow's own work (reading and
    validating the data); or once the fan-out proves large (`auto_local_cluster`).

    `runner()` waits for it and gives a `DaskTaskRunner` on it; `close_soon()` stops it in the
    background once the fan-out's results are in; `close()` waits until it is stopped (call it
    in a `finally`: the worker processes never outlive the flow). Nothing starts until `start()`."""

    def __init__(self, workers: int, warm: tuple[str, ...] = ()) -> None:
        self._workers, self._warm = workers, warm
        self._cluster: Any = None
        self._error: BaseException | None = None
        self._starter: threading.Thread | None = None
        self._closer: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._starter is not None

    def start(self) -> FanoutCluster:
        if self._starter is None:
            self._starter = threading.Thread(target=self._start, name="conveyor-dask", daemon=True)
            self._starter.start()
        return self

    def _start(self) -> None:
        try:
            from distributed import Client, LocalCluster

            self._cluster = LocalCluster(**_local_cluster_kwargs(self._workers))
        except BaseException as exc:  # raised to the flow by runner()
            self._error = exc
            return
        try:
            with Client(self._cluster, set_as_default=False) as client:
                client.run(_import_modules, self._warm)
        except Exception as exc:  # a task that needs the module fails with the real error
            logger.debug("warming the Dask workers failed: %s", exc)

    def runner(self) -> TaskRunner[Any]:
        from prefect_dask import DaskTaskRunner

        self.start()
        assert self._starter is not None
        self._starter.join()
        if self._error is not None:
            raise self._error
        return DaskTaskRunner(cluster=self._cluster)

    def close_soon(self) -> None:
        if self._closer is None and self._starter is not None:
            self._closer = threading.Thread(target=self._stop, name="conveyor-dask-close", daemon=True)
            self._closer.start()

    def close(self) -> None:
        self.close_soon()
        if self._closer is not None:
            self._closer.join()

    def _stop(self) -> None:
        assert self._starter is not None
        self._starter.join()
        if self._cluster is not None:
            with contextlib.suppress(Exception):  # already stopped
                self._cluster.close()


def _import_modules(names: tuple[str, ...]) -> None:
    """On each worker of a fan-out's cluster: import what its first task needs; and when the
    cluster closes, exit without tearing the heap down (`conveyor.process_exit`)."""
    import importlib

    from conveyor.process_exit import exit_quickly

    exit_quickly()
    for name in names:
        importlib.import_module(name)


@contextlib.contextmanager
def no_heartbeats() -> Iterator[None]:
    """Flow runs started in the block send no heartbeats.

    Prefect gives every flow run a thread that sends a heartbeat every
    `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (180 by default) and sleeps in 1 s steps; at the
    run's end Prefect joins it, so each flow run lasts up to a second longer than its body
    (measured here: an empty flow call 1.07 s with heartbeats, 0.08 s without;
    `benchmarks/bench_flow_call.py`). A heartbeat lets a server that outlives the process notice a
    run whose process died. Conveyor turns them off where nothing can use them: under a command's
    temporary server, which dies with the command (conveyor.temporary_api.one_prefect_api), and
    for the child training runs of a fan-out, which run inside a task of their parent run (the
    parent keeps its heartbeats). Runs a worker starts on the stack keep them.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


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
