"""The training run's record in MLflow: opened, fed, named by its outcome, closed.

Each call is a Prefect task so it retries on I/O hiccups and shows by name in the UI; the
MLflow run id is passed explicitly (the fluent active run is thread-local).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from conveyor import links, registry
from conveyor.errors import DataError, storage_error
from conveyor.lineage import Lineage
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.contracts import ValidationReport
from tasks.data import Dataset, Split
from tasks.evaluation import Evaluation


def run_tags(spec: PipelineSpec, lineage: Lineage | None, flow_run_id: str) -> dict[str, str]:
    tags = {
        "conveyor.kind": "training",
        "conveyor.model": spec.name,
        "conveyor.task": str(spec.task),
        "conveyor.prefect_flow_run_id": flow_run_id,
    }
    if lineage is not None:
        tags.update(lineage.tags())
    flow_url = links.prefect_flow_run_url(flow_run_id)
    if flow_url:
        tags["conveyor.prefect_flow_run_url"] = flow_url
        tags["mlflow.note.content"] = f"Started by Prefect flow run [{flow_run_id}]({flow_url})."
    return tags


@task(name="open_training_run", **IO_TASK)
def open_training_run(
    spec: PipelineSpec, lineage: Lineage | None, flow_run_id: str, resume_run_id: str | None = None
) -> str:
    """Start the model's MLflow run (or reopen the run of a version this rerun adopts), after
    ending FAILED any run a killed predecessor left RUNNING."""
    closed = registry.close_interrupted_runs(spec.name, keep=resume_run_id)
    if resume_run_id:
        registry.reopen_run(resume_run_id)
        registry.set_tags(resume_run_id, {"conveyor.resumed_by_flow_run": flow_run_id})
        run_id = resume_run_id
    else:
        run_id = registry.start_run(spec.name, run_name=f"train-{spec.name}", tags=run_tags(spec, lineage, flow_run_id))
    if closed:
        registry.set_tags(run_id, {"conveyor.closed_interrupted_runs": ",".join(closed)})
    return run_id


@task(name="log_training_inputs", **IO_TASK)
def log_training_inputs(
    run_id: str, spec: PipelineSpec, lineage: Lineage, dataset: Dataset, report: ValidationReport, split: Split
) -> None:
    """The lineage, the validation report, the dataset (schema and digest) and the run's parameters."""
    registry.set_tags(run_id, lineage.tags())
    registry.log_dict(run_id, report.to_dict(), "validation/report.json")
    source = ",".join(dataset.files)
    if len(source) > 1000:  # MLflow's dataset source field is bounded; the digest identifies the files
        source = f"{dataset.source or dataset.files[0]} ({len(dataset.files)} files)"
    registry.log_dataset_input(run_id, dataset.frame, spec.name, dataset.digest, source, spec.data.target)
    registry.log_params(
        run_id,
        {
            "estimator": spec.estimator_path,
            "task": spec.task,
            "primary_metric": spec.primary_metric,
            "rows": len(dataset.frame),
            "train_rows": len(split.X_train),
            "test_rows": len(split.X_test),
            "data_files": source,
            **{f"model.{key}": value for key, value in spec.model.params.items()},
        },
    )


@task(name="log_evaluation", **IO_TASK)
def log_evaluation(
    run_id: str, evaluation: Evaluation, champion_metrics: dict[str, float] | None, best_params: dict[str, Any]
) -> None:
    """Holdout metrics (and the champion's on the same rows), plots, importance, searched parameters."""
    champion = {f"champion.{key}": value for key, value in (champion_metrics or {}).items()}
    registry.log_batch(  # one write
        run_id, {f"best.{key}": value for key, value in best_params.items()}, evaluation.metrics | champion
    )
    registry.log_bytes(run_id, evaluation.plots, "plots")
    registry.log_dict(run_id, evaluation.importance, "feature_importance.json")


@task(name="close_training_run", **IO_TASK)
def close_training_run(run_id: str, spec: PipelineSpec, version: str, outcome: str, reason: str) -> None:
    """Name the run after its version and outcome (`v3-promoted`), describe it, end it FINISHED."""
    flow_url = registry.client().get_run(run_id).data.tags.get("conveyor.prefect_flow_run_url")
    started = f"\n\nStarted by [Prefect flow run]({flow_url})." if flow_url else ""
    note = f"**{spec.name} v{version}: {outcome}**. {reason}{started}"
    registry.rename_run(run_id, f"v{version}-{outcome}", note)
    registry.set_tags(run_id, {"conveyor.decision": outcome, "conveyor.version": version})
    registry.end_run(run_id)


@task(name="fail_training_run", retries=1, retry_delay_seconds=2)
def fail_training_run(run_id: str, error: BaseException) -> None:
    """End the run FAILED with the error (and the validation report of a refusal) attached."""
    if isinstance(error, DataError) and error.report is not None:
        registry.log_dict(run_id, error.report, "validation/report.json")
    message = storage_error(error) or error
    registry.set_tags(run_id, {"conveyor.error": str(message)[:5000]})
    registry.rename_run(run_id, f"failed-{type(error).__name__}")
    registry.end_run(run_id, failed=True)
