"""Many models at once: `train_many` trains several specs under one parent run, and `fleet`
publishes one view of every model. Both only wire tasks (tasks/fleet.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from conveyor import registry
from conveyor.orchestration import fanout_task_runner, no_heartbeats
from conveyor.process_exit import exit_quickly
from tasks.fleet import (
    SpecOutcome,
    failed_outcome,
    outcome_of,
    outcomes_markdown,
    publish_fleet,
    read_fleet_task,
    spec_label,
)

exit_quickly()  # a flow run on a worker is a process of its own (conveyor.process_exit)


@task(name="train_spec", task_run_name="train-{spec}", cache_policy=NO_CACHE)
def train_spec(spec: str, data_path: str | None, allow_promotion: bool) -> SpecOutcome:
    """One model's training flow run (a child of the parent run); its failure is its row, never raised."""
    from flows.training import training_flow

    try:
        with no_heartbeats():  # a child lives inside this task of its parent run, which keeps its own
            state = training_flow(spec=spec, data_path=data_path, allow_promotion=allow_promotion, return_state=True)
    except BaseException as exc:  # a crash outside the flow's own handling (a worker lost, the API gone)
        return failed_outcome(spec, exc)
    return outcome_of(spec, state)


def _many_run_name() -> str:
    return f"train-{len(flow_run.parameters.get('specs') or [])}-specs"


# The runner picked where the flow is loaded (CONVEYOR_DASK, CONVEYOR_DASK_ADDRESS,
# CONVEYOR_WORKERS); `train_many` picks it per call.
@flow(name="train-many", flow_run_name=_many_run_name, task_runner=fanout_task_runner())
def train_many_flow(
    specs: list[str], data_path: str | None = None, allow_promotion: bool = True
) -> list[dict[str, Any]]:
    """Train every spec, a bounded number at once, one child training run each; one model's
    failure never stops the others. The runs list shows the parent; its artifact names the failures.

    Args:
        specs: spec files or model names under pipelines/
        data_path: train every spec on this file or glob instead of its data.path
        allow_promotion: when false, better models are registered but no champion moves
    """
    logger = get_run_logger()
    # A new tracking store is created and migrated here, once: worker processes opening it at the
    # same time race on its schema migration (seen: one model failed with alembic's CommandError).
    registry.client().search_experiments(max_results=1)
    futures = [train_spec.submit(spec, data_path, allow_promotion) for spec in specs]
    outcomes: list[SpecOutcome] = []
    for spec, future in zip(specs, futures, strict=True):
        try:
            outcomes.append(future.result())
        except BaseException as exc:  # the task itself lost (e.g. a Dask worker died)
            outcomes.append(failed_outcome(spec, exc))
    for outcome in outcomes:  # a failure was logged by its own run: here one line, kept off the CLI's terminal
        level = logging.WARNING if outcome.status == "failed" else logging.INFO
        name = outcome.model or spec_label(outcome.spec)
        logger.log(level, "%s: %s %s", name, outcome.status, outcome.detail, extra={"conveyor_expected": True})
    failed = sum(o.status == "failed" for o in outcomes)
    create_markdown_artifact(
        outcomes_markdown(outcomes),
        key="train-many",
        description=f"{len(outcomes)} specs, {failed} failed",
    )
    return [outcome.as_dict() for outcome in outcomes]


def train_many(
    specs: list[str],
    data_path: str | None = None,
    allow_promotion: bool = True,
    max_parallel: int | None = None,
    dask: bool | None = None,
) -> list[dict[str, Any]]:
    """`train_many_flow` on the fan-out runner (see conveyor.orchestration.fanout_task_runner)."""
    runner = fanout_task_runner(dask=dask, max_workers=max_parallel)
    return train_many_flow.with_options(task_runner=runner)(
        specs=specs, data_path=data_path, allow_promotion=allow_promotion
    )


@flow(name="fleet", flow_run_name="fleet")
def fleet_flow() -> list[dict[str, Any]]:
    """Every model's state in one table (a Prefect table artifact) and one HTML page (in MLflow,
    experiment `conveyor-fleet`), sorted so that what needs a person comes first."""
    rows = read_fleet_task()
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = publish_fleet(rows, generated)
    get_run_logger().info("%d model(s); page in MLflow run %s", len(rows), page.run_id)
    return [row.as_dict() for row in rows]
