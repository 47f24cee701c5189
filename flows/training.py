"""The training flow: one generic flow for every pipeline spec. It only wires tasks and gates."""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from conveyor import registry
from conveyor.decision import Decision, decide
from conveyor.errors import ConveyorError, DataError, GateNotMet, storage_error
from conveyor.events import DATA_ARRIVED
from conveyor.lineage import Lineage, lineage_of
from conveyor.orchestration import model_slot, run_tags
from conveyor.policy import retrain_refusal
from conveyor.process_exit import exit_quickly
from conveyor.settings import user_path
from conveyor.spec import PipelineSpec, find_spec
from flows.governance import wait_for_approval
from tasks.approvals import require_approval
from tasks.card import log_model_card, model_card
from tasks.comparison import compare_with_champion, hashes_bytes, load_champion_rows, row_hashes
from tasks.contracts import validate_data
from tasks.data import Dataset, infer_task, load_data, split_data
from tasks.evaluation import compute_metrics, evaluate_model
from tasks.fairness import evaluate_fairness, fairness_gate, holdout_groups, log_fairness
from tasks.lineage import digest_contract, digest_data, find_existing_version, is_final
from tasks.packaging import build_reference_profile, package_model
from tasks.registry import Registered, load_champion, promote_model, recover_interrupted, register_model
from tasks.summary import TrainingResult, publish_summary, publish_unchanged, skipped
from tasks.tracking import close_training_run, fail_training_run, log_evaluation, log_training_inputs, open_training_run
from tasks.training import load_adopted_model, train_model

exit_quickly()  # a flow run on a worker is a process of its own (conveyor.process_exit)


def _run_name() -> str:
    spec = flow_run.parameters.get("spec", "model")
    return f"train-{str(spec).rsplit('/', 1)[-1].removesuffix('.yaml')}"


@flow(name="training", flow_run_name=_run_name, log_prints=False)
def training_flow(
    spec: str, data_path: str | None = None, allow_promotion: bool = True, trigger: str | None = None
) -> Any:
    """Validate, train, evaluate, package, register and (when it earns it) promote one model.

    Args:
        spec: the model's name under pipelines/, or a path to its YAML spec
        data_path: read this file or glob instead of the spec's data.path (relative to the
            project root; the CLI resolves it against the working directory)
        allow_promotion: when false, a better model is registered but the champion does not move
        trigger: set by automations (the event that started this run); the spec's retrain_on
            policy and cooldown decide whether it trains
    """
    logger = get_run_logger()
    try:
        pipeline = find_spec(spec)
        registry.check_reachable()
        run_tags(pipeline.name)
        with model_slot(pipeline.name):
            if trigger:
                refusal = retrain_refusal(pipeline, trigger, registry.last_training_start(pipeline.name), time.time())
                if refusal is not None:
                    if trigger == DATA_ARRIVED:  # let the watch flow announce the data again later
                        registry.delete_model_tag(pipeline.name, "conveyor.announced_data_digest")
                    result = skipped(pipeline, refusal)
                    logger.info("%s", result.message)
                    return Completed(message=result.message, data=result.as_dict())
            result = _train(pipeline, user_path(data_path) if data_path else None, allow_promotion)
        result = wait_for_approval(pipeline, result)  # on a server, with the model's slot released
    except Exception as raised:
        # An expected failure: one line in the log and in the run's state, no traceback.
        exc = raised if isinstance(raised, ConveyorError) else storage_error(raised)
        if exc is None:
            raise
        level = logging.WARNING if isinstance(exc, GateNotMet) else logging.ERROR
        logger.log(level, "%s", exc, extra={"conveyor_expected": True})
        return Failed(message=str(exc)[:2000], data=exc)
    logger.info("%s", result.message)
    return Completed(message=result.message, data=result.as_dict())


def _train(pipeline: PipelineSpec, data_path: str | None, allow_promotion: bool) -> TrainingResult:
    if pipeline.segments is not None:  # one model per segment, and the router that serves them
        from flows.segments import train_segments

        return train_segments(pipeline, data_path, allow_promotion)
    recovered = recover_interrupted(pipeline)
    if recovered:
        get_run_logger().warning("finished what interrupted runs left: %s", ", ".join(recovered))
    spec_digest = pipeline.digest()  # of the spec as written, before its task is settled
    data_digest = digest_data(pipeline, data_path)
    contract = digest_contract(pipeline)
    lineage = None if contract is None else lineage_of(data_digest, spec_digest, contract)
    existing = None if lineage is None else find_existing_version(pipeline.name, lineage.key)
    if existing is not None and is_final(existing, allow_promotion):
        return _unchanged(pipeline, existing)

    dataset: Dataset = load_data(pipeline, data_path)
    target = pipeline.data.target
    if target not in dataset.frame.columns:
        columns = ", ".join(map(str, dataset.frame.columns))
        raise DataError(f"{dataset.files[0]}: target column {target!r} is not in the data (columns: {columns})")
    pipeline = pipeline.for_task(pipeline.task or infer_task(dataset.frame[target]))
    run_id = open_training_run(pipeline, lineage, str(flow_run.id or ""), None if existing is None else existing.run_id)
    try:
        report = validate_data(pipeline, dataset)  # drafts the contract on a first run
        if lineage is None or lineage.data_digest != dataset.digest:
            lineage = lineage_of(dataset.digest, spec_digest, digest_contract(pipeline) or "")
            existing = find_existing_version(pipeline.name, lineage.key)
            if existing is not None and is_final(existing, allow_promotion):
                registry.delete_run(run_id)  # the contract had been deleted and drafted again, identically
                return _unchanged(pipeline, existing)
        result = _train_in_run(pipeline, dataset, report, lineage, run_id, existing, allow_promotion)
    except BaseException as exc:
        try:
            fail_training_run(run_id, exc)
        except Exception as bookkeeping:  # the tracker failing too must not hide the first error
            get_run_logger().warning("could not end MLflow run %s FAILED: %s", run_id, bookkeeping)
        raise
    close_training_run(run_id, pipeline, str(result.version), result.outcome, result.reason)
    if result.outcome == "rejected":
        raise GateNotMet(f"{pipeline.name} v{result.version} rejected: {result.reason}")
    return result


def _unchanged(pipeline: PipelineSpec, existing: Any) -> TrainingResult:
    """Same inputs as a decided version: report it; a rejected one fails again, as it did."""
    result = publish_unchanged(pipeline, existing)
    if result.outcome == "rejected":
        raise GateNotMet(f"{result.message}: {existing.tags.get('conveyor.decision_reason', '')}")
    return result


def _train_in_run(
    pipeline: PipelineSpec,
    dataset: Dataset,
    report: Any,
    lineage: Lineage,
    run_id: str,
    adopted: Any | None,
    allow_promotion: bool,
) -> TrainingResult:
    name, task_type = pipeline.name, pipeline.task
    assert task_type is not None  # settled by for_task() before the run started
    split = split_data(pipeline, dataset.frame)
    sensitive = holdout_groups(pipeline, dataset.frame, split.X_test.index)  # kept even when not features
    log_training_inputs(run_id, pipeline, lineage, dataset, report, split)
    if adopted is None:
        model, best_params = train_model(pipeline, split.X_train, split.y_train)
    else:  # a version registered by an interrupted run: finish its job with the model it logged
        model, best_params = load_adopted_model(name, str(adopted.version)), {}
    evaluation = evaluate_model(task_type, model, split.X_test, split.y_test, pipeline.data.split.seed)
    fairness = evaluate_fairness(task_type, model, split.X_test, split.y_test, sensitive)
    compared_with, champion_model = load_champion(name)
    comparison = compare_with_champion(
        task_type,
        model,
        champion_model,
        split.X_test,
        split.y_test,
        evaluation.metrics,
        load_champion_rows(name, compared_with),
    )
    champion_metrics = comparison.champion
    log_evaluation(run_id, evaluation, champion_metrics, best_params)
    log_fairness(run_id, fairness)
    metric, floors, margin = pipeline.primary_metric, pipeline.evaluation.floors, pipeline.evaluation.margin
    plan = decide(metric, evaluation.metrics, None, floors, margin)  # floors: on the whole holdout
    if plan.outcome != "rejected" and champion_metrics is not None:
        against = decide(metric, comparison.candidate, champion_metrics, {}, margin)
        plan = Decision(against.outcome, against.reason + comparison.note())
    plan = fairness_gate(plan, pipeline.governance.fairness, fairness)  # over the limit rejects, like a floor

    if adopted is not None:
        registered = Registered(str(adopted.version), adopted.run_id, f"models:/{name}/{adopted.version}")
    else:
        profile = build_reference_profile(pipeline, model, split, evaluation.metrics)
        card = model_card(
            pipeline,
            len(dataset.frame),
            lineage,
            evaluation.metrics,
            champion_metrics,
            evaluation.importance,
            best_params,
            validation=report.message(),
            intervals=evaluation.intervals,
            holdout_rows=len(split.X_test),
            fairness=fairness,
            decision=plan,
        )
        log_model_card(run_id, card)
        train_rows = hashes_bytes(row_hashes(split.X_train, split.y_train))
        packaged = package_model(run_id, pipeline, model, split.X_test, card, profile, train_rows)
        tags = {
            **lineage.tags(),
            "conveyor.task": str(task_type),
            "conveyor.validation": "passed",
            "conveyor.rows": str(len(dataset.frame)),
            **{f"conveyor.metric.{key}": f"{value:.6g}" for key, value in evaluation.metrics.items()},
        }
        registered = register_model(name, packaged, run_id, tags, pipeline.description)

    def rescore(version: str) -> dict[str, float] | None:
        return compute_metrics(task_type, registry.load_model(name, version), split.X_test, split.y_test)

    plan = require_approval(pipeline, plan, registered.version, allow_promotion)
    try:
        final = promote_model(pipeline, registered, plan, compared_with, evaluation.metrics, rescore, allow_promotion)
    except BaseException:
        registry.discard_undecided(name, registered.version)  # nothing moved yet: no half-registered version
        raise
    result = TrainingResult(
        model=name,
        version=registered.version,
        outcome=final.outcome,
        reason=final.reason,
        metric=pipeline.primary_metric,
        value=evaluation.metrics.get(pipeline.primary_metric),
        champion=_champion_now(name),
        compared_with=compared_with,
        run_id=run_id,
        adopted=adopted is not None,
    )
    publish_summary(pipeline, result, evaluation.metrics, champion_metrics)
    return result


def _champion_now(name: str) -> str | None:
    current = registry.alias_version(name, registry.CHAMPION)
    return None if current is None else str(current.version)
