"""The training flow: one generic flow for every pipeline spec."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from conveyor import registry
from conveyor.decision import Decision, decide
from conveyor.errors import DataError, GateNotMet
from conveyor.events import DATA_ARRIVED, POLICY
from conveyor.lineage import lineage_of
from conveyor.orchestration import IO_TASK, model_slot, run_tags
from conveyor.spec import DEFAULT_METRIC, PipelineSpec, find_spec
from tasks.contracts import validate_data
from tasks.data import Dataset, data_digest, infer_task, load_data, split_data
from tasks.drift import build_profile
from tasks.evaluation import compute_metrics, evaluate_champion, evaluate_model, prediction_frame
from tasks.registry import model_card, package_model, promote_model, register_model
from tasks.training import infer_columns, train_model


@dataclass(frozen=True)
class TrainingResult:
    model: str
    version: str
    outcome: str
    reason: str
    metric: str
    value: float | None
    champion: str | None
    run_id: str
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@task(name="digest_data", **IO_TASK)
def digest_data(spec: PipelineSpec, data_path: str | None) -> str:
    """sha256 over the data files' bytes (each size-checked first), taken before parsing so an
    unchanged rerun reads nothing."""
    return data_digest(spec.resolve_path(data_path or spec.data.path), spec.data.max_file_mb)


@task(name="find_existing_version", cache_policy=NO_CACHE)
def find_existing_version(name: str, lineage_key: str) -> Any | None:
    """A version already trained and decided from the same data, spec and code.

    A version without a decision was left by a run that died between registering and promoting:
    it does not count, so the rerun finishes the job (registry lookups are never cached)."""
    version = registry.find_version_by_tag(name, "conveyor.lineage_key", lineage_key)
    return version if version is not None and "conveyor.decision" in version.tags else None


@task(name="load_champion", **IO_TASK)
def load_champion(name: str) -> tuple[str | None, Any | None]:
    current = registry.alias_version(name, registry.CHAMPION)
    if current is None:
        return None, None
    return str(current.version), registry.load_model(name, str(current.version))


def _markdown(
    spec: PipelineSpec, result: TrainingResult, metrics: dict[str, float], champion: dict[str, float] | None
) -> str:
    rows = "\n".join(
        f"| {name} | {value:.4f} | {'-' if not champion or name not in champion else f'{champion[name]:.4f}'} |"
        for name, value in sorted(metrics.items())
    )
    return f"""# {spec.name} v{result.version}: **{result.outcome}**

{result.reason}

| metric | candidate | champion (v{result.champion or "-"}) on the same holdout |
| --- | --- | --- |
{rows}

{_links(spec.name, result)}; primary metric {spec.primary_metric}.
"""


def _links(name: str, result: TrainingResult) -> str:
    """Links into the MLflow UI when tracking goes to a server, else the run id and model URI."""
    uri = registry.client().tracking_uri
    run = f"MLflow run `{result.run_id}`"
    model = f"model `models:/{name}/{result.version}`"
    if uri.startswith(("http://", "https://")):
        experiment = registry.client().get_run(result.run_id).info.experiment_id
        run = f"[MLflow run]({uri}/#/experiments/{experiment}/runs/{result.run_id})"
        model = f"[model {name} v{result.version}]({uri}/#/models/{name}/versions/{result.version})"
    return f"{run}; {model}"


def _run_name() -> str:
    spec = flow_run.parameters.get("spec", "model")
    return f"train-{str(spec).rsplit('/', 1)[-1].removesuffix('.yaml')}"


def retrain_refusal(spec: PipelineSpec, trigger: str, last_start: float | None, now: float) -> str | None:
    """Why an event-triggered run must not train (None: it may): the spec's `retrain_on`
    policy, then the per-model cooldown since the last training run started."""
    policy = POLICY.get(trigger)
    if policy is None:
        return f"unknown trigger {trigger!r}; expected one of {sorted(POLICY)}"
    if policy not in spec.monitoring.retrain_on:
        return f"{trigger}: monitoring.retrain_on {list(spec.monitoring.retrain_on)} does not include {policy!r}"
    cooldown = spec.monitoring.cooldown_minutes * 60
    if last_start is not None and now - last_start < cooldown:
        waited = (now - last_start) / 60
        minutes = spec.monitoring.cooldown_minutes
        return f"{trigger}: cooling down ({waited:.1f} of {minutes:g} minutes since the last training run)"
    return None


@flow(name="training", flow_run_name=_run_name, log_prints=False)
def training_flow(
    spec: str, data_path: str | None = None, allow_promotion: bool = True, trigger: str | None = None
) -> dict[str, Any]:
    """Validate, train, evaluate, package, register and (when it earns it) promote one model.

    Args:
        spec: the model's name under pipelines/, or a path to its YAML spec
        data_path: read this file or glob instead of the spec's data.path
        allow_promotion: when false, a better model is registered but the champion does not move
        trigger: the event that started this run (set by deployment triggers); the spec's
            retrain_on policy and cooldown decide whether it trains
    """
    logger = get_run_logger()
    pipeline = find_spec(spec)
    run_tags(pipeline.name)
    with model_slot(pipeline.name):
        if trigger:
            refusal = retrain_refusal(pipeline, trigger, registry.last_training_start(pipeline.name), time.time())
            if refusal is not None:
                if trigger == DATA_ARRIVED:  # let the watch flow announce the data again later
                    registry.delete_model_tag(pipeline.name, "conveyor.announced_data_digest")
                logger.info("not training %s: %s", pipeline.name, refusal)
                return {
                    "model": pipeline.name,
                    "outcome": "skipped",
                    "reason": refusal,
                    "version": None,
                    "metric": None,
                    "value": None,
                    "champion": None,
                    "run_id": None,
                    "reused": False,
                }
        return _train(pipeline, data_path, allow_promotion, logger)


def _train(pipeline: PipelineSpec, data_path: str | None, allow_promotion: bool, logger: Any) -> dict[str, Any]:
    lineage = lineage_of(digest_data(pipeline, data_path), pipeline.digest())
    existing = find_existing_version(pipeline.name, lineage.key)
    if existing is not None:
        return _reuse(pipeline, existing, logger)

    dataset: Dataset = load_data(pipeline, data_path)
    target = pipeline.data.target
    if target not in dataset.frame.columns:
        raise DataError(
            f"{dataset.files[0]}: target column {target!r} is not in the data "
            f"(columns: {', '.join(map(str, dataset.frame.columns))})"
        )
    pipeline = pipeline.for_task(pipeline.task or infer_task(dataset.frame[target]))
    if dataset.digest != lineage.data_digest:  # the files changed while we were reading them
        lineage = lineage_of(dataset.digest, pipeline.digest())

    run_id = registry.start_run(
        pipeline.name,
        run_name=f"train-{pipeline.name}",
        tags={
            **lineage.tags(),
            "conveyor.kind": "training",
            "conveyor.model": pipeline.name,
            "conveyor.task": str(pipeline.task),
            "conveyor.prefect_flow_run_id": str(flow_run.id or ""),
        },
    )
    try:
        result, metrics, champion_metrics = _train_in_run(pipeline, dataset, lineage, run_id, allow_promotion)
    except BaseException as exc:
        if isinstance(exc, DataError) and exc.report is not None:
            registry.log_dict(run_id, exc.report, "validation/report.json")
        registry.set_tags(run_id, {"conveyor.error": str(exc)[:5000]})
        registry.end_run(run_id, failed=True)
        raise
    registry.end_run(run_id)
    create_markdown_artifact(
        _markdown(pipeline, result, metrics, champion_metrics),
        key=f"training-{_key(pipeline.name)}",
        description=f"{pipeline.name} v{result.version}: {result.outcome}",
    )
    logger.info("%s v%s %s: %s", pipeline.name, result.version, result.outcome, result.reason)
    if result.outcome == "rejected":
        raise GateNotMet(f"{pipeline.name} v{result.version} rejected: {result.reason}")
    return result.as_dict()


def _reuse(pipeline: PipelineSpec, existing: Any, logger: Any) -> dict[str, Any]:
    """Report the version already trained from the same data, spec and code; change nothing."""
    task_type = existing.tags.get("conveyor.task", "binary")
    metric = pipeline.evaluation.metric or DEFAULT_METRIC[task_type]
    champion = registry.alias_version(pipeline.name, registry.CHAMPION)
    result = TrainingResult(
        model=pipeline.name,
        version=str(existing.version),
        outcome=existing.tags.get("conveyor.decision", "kept"),
        reason=f"same data, spec and code as version {existing.version}: nothing to do",
        metric=metric,
        value=float(existing.tags.get(f"conveyor.metric.{metric}", "nan")),
        champion=None if champion is None else str(champion.version),
        run_id=existing.run_id,
        reused=True,
    )
    logger.info(result.reason)
    create_markdown_artifact(f"# {pipeline.name}: unchanged\n\n{result.reason}.", key=f"training-{_key(pipeline.name)}")
    return result.as_dict()


def _train_in_run(
    pipeline: PipelineSpec, dataset: Dataset, lineage: Any, run_id: str, allow_promotion: bool
) -> tuple[TrainingResult, dict[str, float], dict[str, float] | None]:
    report = validate_data(pipeline, dataset)
    registry.log_dict(run_id, report.to_dict(), "validation/report.json")
    registry.log_dataset_input(
        run_id, dataset.frame, pipeline.name, dataset.digest, ",".join(dataset.files), pipeline.data.target
    )
    split = split_data(pipeline, dataset.frame)
    registry.log_params(
        run_id,
        {
            "estimator": pipeline.estimator_path,
            "task": pipeline.task,
            "primary_metric": pipeline.primary_metric,
            "rows": len(dataset.frame),
            "train_rows": len(split.X_train),
            "test_rows": len(split.X_test),
            "data_files": ",".join(dataset.files),
            **{f"model.{key}": value for key, value in pipeline.model.params.items()},
        },
    )
    task_type = pipeline.task
    assert task_type is not None  # settled by for_task() before the run started
    model, best_params = train_model(pipeline, split.X_train, split.y_train, content_key=lineage.key)
    evaluation = evaluate_model(task_type, model, split.X_test, split.y_test, pipeline.data.split.seed)
    champion_version, champion_model = load_champion(pipeline.name)
    champion_metrics = evaluate_champion(task_type, champion_model, split.X_test, split.y_test)

    registry.log_params(run_id, {f"best.{key}": value for key, value in best_params.items()})
    registry.log_metrics(run_id, evaluation.metrics)
    if champion_metrics:
        registry.log_metrics(run_id, champion_metrics, prefix="champion.")
    registry.log_bytes(run_id, evaluation.plots, "plots")
    registry.log_dict(run_id, evaluation.importance, "feature_importance.json")

    decision = decide(
        pipeline.primary_metric,
        evaluation.metrics,
        champion_metrics,
        pipeline.evaluation.floors,
        pipeline.evaluation.margin,
    )
    roles = infer_columns(split.X_train)
    profile = build_profile(
        split.X_train,
        list(roles.numeric),
        list(roles.categorical),
        prediction_frame(pipeline.task, model, split.X_test),  # type: ignore[arg-type]
        evaluation.metrics,
        seed=pipeline.data.split.seed,
    )
    card = model_card(
        pipeline, len(dataset.frame), lineage, evaluation.metrics, champion_metrics, evaluation.importance, best_params
    )
    packaged = package_model(
        run_id,
        model,
        split.X_test,
        card,
        {
            "conveyor/spec.json": pipeline.model_dump_json(indent=2),
            "conveyor/columns.json": registry.to_json({"numeric": roles.numeric, "categorical": roles.categorical}),
            # Monitoring compares recent rows with this instead of reloading the training data.
            "conveyor/profile.json": json.dumps(profile),
        },
    )
    tags = {
        **lineage.tags(),
        "conveyor.task": str(pipeline.task),
        "conveyor.validation": "passed",
        "conveyor.rows": str(len(dataset.frame)),
        **{f"conveyor.metric.{key}": f"{value:.6g}" for key, value in evaluation.metrics.items()},
    }
    registered = register_model(pipeline.name, packaged, run_id, tags)

    def rescore(version: str) -> dict[str, float] | None:
        return compute_metrics(pipeline.task, registry.load_model(pipeline.name, version), split.X_test, split.y_test)  # type: ignore[arg-type]

    try:
        final: Decision = promote_model(
            pipeline, registered, decision, champion_version, evaluation.metrics, rescore, allow_promotion
        )
    except BaseException:
        registry.discard_version(pipeline.name, registered.version)  # no half-registered version
        raise
    registry.set_tags(run_id, {"conveyor.decision": final.outcome, "conveyor.version": registered.version})
    champion_after = registry.alias_version(pipeline.name, registry.CHAMPION)
    result = TrainingResult(
        model=pipeline.name,
        version=registered.version,
        outcome=final.outcome,
        reason=final.reason,
        metric=pipeline.primary_metric,
        value=evaluation.metrics.get(pipeline.primary_metric),
        champion=None if champion_after is None else str(champion_after.version),
        run_id=run_id,
    )
    return result, evaluation.metrics, champion_metrics


def _key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(char if char.isalnum() else "-" for char in name.lower())
