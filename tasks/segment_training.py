"""Train, gate and register one segment model; register the router version that pins the segment
champions. Plain functions do the work; the `@task` wrappers are what a flow submits."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.decision import Decision, decide
from conveyor.errors import ConveyorError
from conveyor.lineage import Lineage, pinned_requirements
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.comparison import fair_comparison, hashes_bytes, load_champion_rows, row_hashes
from tasks.data import split_frame
from tasks.drift.profile import profile_text
from tasks.evaluation import compute_metrics, metrics_from_predictions, predict
from tasks.lineage import is_final
from tasks.packaging import build_reference_profile
from tasks.registry import Registered, apply_promotion
from tasks.segments import (
    ROUTER_CODE,
    ROUTER_KIND,
    ROUTES_FILE,
    SEGMENT,
    SEGMENT_OF,
    SegmentJob,
    load_routes,
    segment_spec,
)
from tasks.training import fit_pipeline, infer_columns

LINEAGE_KEY = "conveyor.lineage_key"
# Model tag on `<name>`: the lineage key of the last whole-spec run that left nothing to do.
SEGMENTS_LINEAGE = "conveyor.segments_lineage_key"


@dataclass(frozen=True)
class SegmentOutcome:
    model: str
    label: str
    key: str | None
    version: str | None
    outcome: str  # promoted, kept, rejected, unchanged, failed
    reason: str
    metric: str
    value: float | None
    champion: str | None  # the segment's champion version after this run
    champion_digest: str | None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reusable_version(versions: list[Any], lineage_key: str, allow_promotion: bool) -> Any | None:
    """The decided version trained from the same rows, spec, contract and code, if any."""
    same = [v for v in versions if v.tags.get(LINEAGE_KEY) == lineage_key and is_final(v, allow_promotion)]
    return max(same, key=lambda v: int(v.version)) if same else None


def champion_of(name: str) -> tuple[str | None, str | None]:
    """(version, artifact digest) of a model's champion, or (None, None)."""
    current = registry.alias_version(name, registry.CHAMPION)
    if current is None:
        return None, None
    return str(current.version), current.tags.get("conveyor.artifact_digest")


def train_segment_model(
    spec: PipelineSpec, job: SegmentJob, lineage: Lineage, allow_promotion: bool, flow_run_id: str
) -> SegmentOutcome:
    """Split, fit, evaluate, gate against this segment's own champion on its own holdout, register,
    promote. A segment's expected failure (too few classes, a bad fit) is its outcome, not a raise.
    The caller holds the spec's promotion lock (`flows.segments.train_segments`)."""
    started = time.perf_counter()
    seg = segment_spec(spec, job)
    task_type = spec.task
    assert task_type is not None
    metric = spec.primary_metric
    try:
        split = split_frame(seg, job.frame)
        model, best_params = fit_pipeline(seg, split.X_train, split.y_train)
    except ConveyorError as exc:
        return SegmentOutcome(job.model, job.label, job.key, None, "failed", str(exc), metric, None, None, None)
    output = predict(task_type, model, split.X_test)  # one pass: the metrics and the profile
    classes = None if task_type == "regression" else list(model.classes_)
    metrics = metrics_from_predictions(task_type, classes, split.y_test, output)
    compared_with, champion_digest = champion_of(job.model)
    champion = None if compared_with is None else registry.load_model(job.model, compared_with)
    champion_rows = load_champion_rows.fn(job.model, compared_with)
    comparison = fair_comparison(task_type, model, champion, split.X_test, split.y_test, metrics, champion_rows)
    plan = decide(metric, metrics, None, spec.evaluation.floors, spec.evaluation.margin)
    if plan.outcome != "rejected" and comparison.champion is not None:
        against = decide(metric, comparison.candidate, comparison.champion, {}, spec.evaluation.margin)
        plan = Decision(against.outcome, against.reason + comparison.note())

    tags = {
        "conveyor.kind": "training",
        "conveyor.model": job.model,
        SEGMENT_OF: spec.name,
        SEGMENT: job.label,
        "conveyor.task": str(task_type),
        "conveyor.prefect_flow_run_id": flow_run_id,
        **lineage.tags(),
    }
    run_id = registry.start_run(spec.name, run_name=f"{job.label}", tags=tags)
    try:
        champion_metrics = {f"champion.{key}": value for key, value in (comparison.champion or {}).items()}
        registry.log_batch(  # the params and both sets of metrics in one write
            run_id,
            {
                "estimator": spec.estimator_path,
                "segment": job.label,
                "rows": len(job.frame),
                **({"sampled_from": job.source_rows} if job.source_rows > len(job.frame) else {}),
                "train_rows": len(split.X_train),
                "test_rows": len(split.X_test),
                **{f"best.{key}": value for key, value in best_params.items()},
            },
            metrics | champion_metrics,
        )
        profile = build_reference_profile.fn(seg, model, split, metrics, output)
        example = split.X_test.head(5)
        example_output = output[:5]  # the holdout's first rows, already predicted
        roles = infer_columns(split.X_test)
        packaged = registry.package_model(
            run_id,
            model,
            example,
            example_output,
            list(pinned_requirements()),
            extra_files={  # uploaded as one folder, as the single-model path does
                "conveyor/spec.json": seg.model_dump_json(indent=2),
                "conveyor/columns.json": registry.to_json({"numeric": roles.numeric, "categorical": roles.categorical}),
                "conveyor/profile.json": profile_text(profile),
                "conveyor/train_rows.npy": hashes_bytes(row_hashes(split.X_train, split.y_train)),
            },
        )
        version_tags = {
            **tags,
            "conveyor.validation": "passed",
            "conveyor.rows": str(len(job.frame)),
            "conveyor.artifact_digest": packaged.artifact_digest,
            **{f"conveyor.metric.{key}": f"{value:.6g}" for key, value in metrics.items()},
        }
        version = registry.register_version(
            job.model,
            packaged.model_uri,
            run_id,
            version_tags,
            packaged.model_id,
            model_tags={SEGMENT_OF: spec.name},
            new_run=True,
        )
        registered = Registered(str(version.version), run_id, packaged.model_uri)

        def rescore(current: str) -> dict[str, float] | None:
            return compute_metrics(task_type, registry.load_model(job.model, current), split.X_test, split.y_test)

        try:
            final = apply_promotion(
                seg, registered, plan, compared_with, metrics, rescore, allow_promotion, locked=True, fresh=True
            )
        except BaseException:
            registry.discard_undecided(job.model, registered.version)
            raise
    except BaseException as exc:
        registry.set_tags(run_id, {"conveyor.error": str(exc)[:5000]})
        registry.end_run(run_id, failed=True)
        raise
    note = f"**{job.model} v{registered.version}: {final.outcome}** ({job.label}). {final.reason}"
    # The name and note `registry.rename_run` would write, and the decision, in one write.
    registry.set_tags(
        run_id,
        {
            "mlflow.runName": f"{job.label} v{registered.version}-{final.outcome}",
            "mlflow.note.content": note,
            "conveyor.decision": final.outcome,
            "conveyor.version": registered.version,
        },
    )
    registry.end_run(run_id)
    if final.outcome == "promoted":
        compared_with, champion_digest = registered.version, packaged.artifact_digest
    return SegmentOutcome(
        job.model,
        job.label,
        job.key,
        registered.version,
        final.outcome,
        final.reason,
        metric,
        metrics.get(metric),
        compared_with,
        champion_digest,
        round(time.perf_counter() - started, 3),
    )


def train_segment_models(
    spec: PipelineSpec, jobs: list[tuple[SegmentJob, Lineage]], allow_promotion: bool, flow_run_id: str
) -> list[SegmentOutcome]:
    """Several segments' models one after another; one segment's unexpected error does not stop
    the others, and the first such error is raised once they are done."""
    outcomes, error = [], None
    for job, lineage in jobs:
        try:
            outcomes.append(train_segment_model(spec, job, lineage, allow_promotion, flow_run_id))
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error
    return outcomes


@task(name="train_segments", task_run_name="train-{label}", cache_policy=NO_CACHE)
def train_segment_batch(
    spec: PipelineSpec, jobs: list[tuple[SegmentJob, Lineage]], allow_promotion: bool, flow_run_id: str, label: str
) -> list[SegmentOutcome]:
    """A batch of segments' models (`label` names them): each trained, gated against its own
    champion, registered and decided (`train_segment_models`)."""
    return train_segment_models(spec, jobs, allow_promotion, flow_run_id)


def current_routes(name: str) -> tuple[str | None, dict[str, Any] | None]:
    """The router champion's version and its routes, or (None, None)."""
    current = registry.alias_version(name, registry.CHAMPION)
    if current is None or current.tags.get("conveyor.kind") != ROUTER_KIND:
        return (None if current is None else str(current.version)), None
    return str(current.version), load_routes(name, str(current.version))


def register_router(
    spec: PipelineSpec, routes: dict[str, Any], profile_from: tuple[str, str], lineage: Lineage, summary: str
) -> Registered:
    """Log and register a router version of `<name>` (pyfunc from code + routes.json), with the
    all-rows model's reference profile so monitoring sees the whole model."""
    import mlflow

    name = spec.name
    profile = registry.artifact_text(registry.get_version(*profile_from).run_id, "conveyor/profile.json")
    columns = registry.artifact_text(registry.get_version(*profile_from).run_id, "conveyor/columns.json")
    run_id = registry.start_run(
        name, run_name="router", tags={"conveyor.kind": "router", "conveyor.model": name, **lineage.tags()}
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, ROUTES_FILE)
        path.write_text(json.dumps(routes, indent=1, default=str))
        registry.client()
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(ROUTER_CODE),
                artifacts={"routes": str(path)},
                pip_requirements=list(pinned_requirements()),
            )
            mlflow.log_text(profile, "conveyor/profile.json")
            mlflow.log_text(columns, "conveyor/columns.json")
            mlflow.log_text(spec.model_dump_json(indent=2), "conveyor/spec.json")
    digest = registry.model_artifact_digest(info.model_uri)
    tags = {
        "conveyor.kind": ROUTER_KIND,
        "conveyor.task": str(spec.task),
        "conveyor.segments": str(len(routes["segments"])),
        "conveyor.artifact_digest": digest,
        **lineage.tags(),
    }
    registry.describe_model(name, spec.description or f"Segment models of pipelines/{name}.yaml, routed by segment.")
    version = registry.register_version(name, info.model_uri, run_id, tags, model_id=info.model_id)
    registered = Registered(str(version.version), run_id, info.model_uri)
    registry.rename_run(run_id, f"router v{registered.version}", summary)
    registry.end_run(run_id)
    return registered


@task(name="route_segments", **IO_TASK)
def publish_router(
    spec: PipelineSpec, routes: dict[str, Any], profile_from: tuple[str, str], lineage: Lineage, reason: str
) -> str:
    """Register a router version and make it champion (an audited decision, like any promotion)."""
    current = registry.alias_version(spec.name, registry.CHAMPION)
    registered = register_router(spec, routes, profile_from, lineage, reason)
    decision = apply_promotion(
        spec,
        registered,
        Decision("promoted", reason),
        None if current is None else str(current.version),
        {},
        lambda _: None,
        True,
        locked=True,  # the segment flow holds the spec's promotion lock
    )
    return f"v{registered.version} {decision.outcome}"
