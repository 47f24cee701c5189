"""Batch scoring and late ground truth: the flows behind `conveyor score` and `feedback`."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from conveyor import settings
from conveyor.links import model_version_link
from conveyor.orchestration import run_tags
from conveyor.predictions import FeedbackResult
from conveyor.process_exit import exit_quickly
from conveyor.settings import user_path
from conveyor.spec import find_spec
from tasks.data import display_path
from tasks.scoring import (
    DEFAULT_CHUNK_ROWS,
    CheckedInput,
    ScoringSummary,
    record_labels,
    resolve_model,
    score_batch,
    validate_input,
)

exit_quickly()  # a flow run on a worker is a process of its own (conveyor.process_exit)


def _model_param() -> str:
    return str(flow_run.parameters.get("model", "model")).rsplit("/", 1)[-1].removesuffix(".yaml")


def _score_run_name() -> str:
    return f"score-{_model_param()}"


def _feedback_run_name() -> str:
    return f"feedback-{_model_param()}"


def _key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return prefix + "".join(char if char.isalnum() else "-" for char in name.lower())


def _scoring_markdown(summary: ScoringSummary, checked: CheckedInput, tracking_uri: str) -> str:
    alias = f" ({summary.alias})" if summary.alias else ""
    model = model_version_link(tracking_uri, summary.model, summary.version)
    files = ", ".join(f"`{display_path(path)}`" for path in summary.log_files)
    return f"""# Scored {summary.model} v{summary.version}{alias}

| | |
| --- | --- |
| rows scored | {summary.rows:,} in {summary.chunks} chunk{"s" * (summary.chunks != 1)} |
| model version | {summary.version}{alias}, resolved once for the run |
| in MLflow | {model} |
| throughput | {summary.rows_per_second:,.0f} rows/s ({summary.seconds:.2f} s) |
| input | `{display_path(summary.input)}` |
| output | `{display_path(summary.output)}` |
| prediction log | {files} |
| serving contract | {checked.message.replace("|", "/")} |
"""


@flow(name="scoring", flow_run_name=_score_run_name, log_prints=False)
def scoring_flow(
    model: str,
    input_path: str,
    output_path: str,
    version: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, Any]:
    """Score a CSV or Parquet file with the champion (or a named version), streamed in chunks.

    Args:
        model: the model's name under pipelines/, or a path to its YAML spec
        input_path: the rows to score (.csv or .parquet); it must pass the serving contract
        output_path: where to write id, prediction, probabilities, model_version, scored_at
        version: score with this registered version instead of the champion
        chunk_rows: rows per chunk (memory grows with it, not with the input)
    """
    logger = get_run_logger()
    spec = find_spec(model)
    run_tags(spec.name)
    serving = resolve_model(spec.name, version)
    # A relative path is the project root's (a deployment's form); the CLI passes absolute paths.
    input_path, output_path = user_path(input_path), user_path(output_path)
    checked = validate_input(spec, serving, input_path)
    summary = score_batch(spec, serving, checked, output_path, chunk_rows)
    create_markdown_artifact(
        _scoring_markdown(summary, checked, settings.tracking_uri()),
        key=_key("scoring-", spec.name),
        description=f"{spec.name} v{summary.version}: {summary.rows} rows scored",
    )
    logger.info(
        "%s v%s: %d rows scored in %.2f s (%.0f rows/s) -> %s",
        spec.name, summary.version, summary.rows, summary.seconds, summary.rows_per_second,
        output_path,
    )  # fmt: skip
    return summary.as_dict()


def _feedback_markdown(result: FeedbackResult) -> str:
    return f"""# Labels for {result.model}

| | |
| --- | --- |
| labels file | `{display_path(result.labels_path)}` |
| rows read | {result.rows:,} |
| ids recorded | {result.recorded:,} (the last row per id wins) |
| rows skipped | {result.skipped:,} (no id or no label) |
| ids matching logged predictions | {result.matched:,} |
| stored in | `{display_path(result.path)}` |
"""


@flow(name="feedback", flow_run_name=_feedback_run_name, log_prints=False)
def feedback_flow(model: str, labels_path: str) -> dict[str, Any]:
    """Record late ground truth (true outcomes by id) for a model's logged predictions.

    Args:
        model: the model's name under pipelines/, or a path to its YAML spec
        labels_path: a .csv or .parquet file with the spec's id column and target column
    """
    spec = find_spec(model)
    run_tags(spec.name)
    result = record_labels(spec, user_path(labels_path))
    create_markdown_artifact(
        _feedback_markdown(result),
        key=_key("feedback-", spec.name),
        description=f"{spec.name}: {result.recorded} labels recorded",
    )
    get_run_logger().info(
        "%s: %d labels recorded, %d match logged predictions",
        spec.name,
        result.recorded,
        result.matched,
    )
    return result.as_dict()
