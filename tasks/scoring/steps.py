"""The scoring steps as Prefect tasks: resolve the model, check the input, score it, record labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from conveyor import predictions
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.scoring.arrow_io import ScoringInput, open_input
from tasks.scoring.contract import check_input, serving_suite
from tasks.scoring.executor import ScoringSummary, score_file
from tasks.scoring.model import ServingModel, load_serving_model


@task(name="resolve_model", **IO_TASK)
def resolve_model(name: str, version: str | None = None) -> ServingModel:
    """Resolve the champion (or the named version) once for the whole run, and load it."""
    model = load_serving_model(name, version)
    get_run_logger().info("scoring with %s v%s%s", name, model.version, f" ({model.alias})" if model.alias else "")
    return model


@dataclass(frozen=True)
class CheckedInput:
    source: ScoringInput
    suite: dict[str, Any] | None
    message: str


@task(name="validate_input", cache_policy=NO_CACHE)
def validate_input(spec: PipelineSpec, model: ServingModel, input_path: str) -> CheckedInput:
    """The serving contract: exact columns, then GX on the first rows; raise DataError if broken."""
    source = open_input(input_path, model)
    suite = serving_suite(spec)
    report = check_input(spec, model, source, suite)
    if report is None:
        message = f"{source.shown}: columns match model v{model.version}'s inputs (no contract)"
        get_run_logger().warning("%s has no contract: checked the input's columns only", spec.name)
    else:
        message = f"{report.message()} (first {report.rows} rows with GX; every chunk with Arrow checks)"
        for item in report.warnings:
            get_run_logger().warning("serving contract warning: %s", item.text(report.source))
    return CheckedInput(source, suite, message)


@task(name="score_batch", cache_policy=NO_CACHE)
def score_batch(
    spec: PipelineSpec,
    model: ServingModel,
    checked: CheckedInput,
    output_path: str,
    chunk_rows: int,
) -> ScoringSummary:
    """Stream the whole input through the model in one task (a task per chunk costs too much)."""
    logger = get_run_logger()

    def progress(chunks: int, rows: int) -> None:
        if chunks % 20 == 0:
            logger.info("%d rows scored", rows)

    return score_file(spec, model, checked.source, output_path, chunk_rows, checked.suite, progress=progress)


@task(name="record_labels", **IO_TASK)
def record_labels(spec: PipelineSpec, labels_path: str) -> predictions.FeedbackResult:
    """Store late ground truth by id in the model's feedback dataset."""
    return predictions.record_feedback(
        spec.name,
        labels_path,
        id_column=spec.data.id_column,
        target=spec.data.target,
        source=spec.source,
    )
