"""Segment models from one spec: the data loaded and validated once, split by `segments.by` in
memory, one model per segment trained through a bounded task runner, each gated against its own
champion; then the router version of `<name>` that serves them all, when a segment champion moved."""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from conveyor import orchestration, registry
from conveyor.errors import DataError, GateNotMet
from conveyor.lineage import Lineage, lineage_of
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.contracts import validate_data
from tasks.data import feature_frame, infer_task, load_data
from tasks.lineage import digest_contract, digest_data
from tasks.segment_training import (
    SEGMENTS_LINEAGE,
    SegmentOutcome,
    champion_of,
    current_routes,
    publish_router,
    reusable_version,
    train_segment_batch,
)
from tasks.segments import (
    SegmentJob,
    SegmentPlan,
    existing_segment_versions,
    plan_segments,
    route_entry,
    routes_document,
)
from tasks.summary import TrainingResult, artifact_key


def segment_task_runner(cluster: orchestration.FanoutCluster | None = None) -> TaskRunner[Any]:
    """The fan-out's runner: one on the flow's own cluster once started, else
    `conveyor.orchestration.fanout_task_runner` (threads, or Dask when asked for) where it exists,
    else a thread pool bounded by the cores."""
    if cluster is not None and cluster.started:
        return cluster.runner()
    fanout = getattr(orchestration, "fanout_task_runner", None)
    if fanout is not None:
        return fanout()  # type: ignore[no-any-return]
    import os

    return ThreadPoolTaskRunner(max_workers=max(1, min(4, os.cpu_count() or 1)))


# What a segment task imports: a cluster started early has its workers import it meanwhile.
WARM = ("tasks.segment_training",)

# Segments per task on a runner of other processes (Dask): about this many tasks per worker, and
# never more than MAX_BATCH segments in one, so the workers finish within a batch of each other.
TASKS_PER_WORKER = 4
MAX_BATCH = 25


Batch = list[tuple[SegmentJob, Lineage]]


def batches(pending: Batch, runner: TaskRunner[Any]) -> list[Batch]:
    """The fan-out's tasks: one segment each on a thread pool (a task costs a few milliseconds
    there; batching them measured no faster at 200 segments); on Dask, where a task costs its
    worker about 0.15 s of Prefect and Dask bookkeeping (profiled here), a few batches per worker
    of at most MAX_BATCH segments. The all-rows model is a task of its own, first."""
    if isinstance(runner, ThreadPoolTaskRunner):
        return [[item] for item in pending]
    first = [item for item in pending if item[0].key is None]
    rest = [item for item in pending if item[0].key is not None]
    size = min(MAX_BATCH, max(1, -(-len(rest) // (_workers(runner) * TASKS_PER_WORKER))))
    return [[item] for item in first] + [rest[i : i + size] for i in range(0, len(rest), size)]


def _workers(runner: TaskRunner[Any]) -> int:
    """The workers of a started Dask runner's cluster (a cluster named by CONVEYOR_DASK_ADDRESS
    may have many more than this machine's cores); else `CONVEYOR_WORKERS` or the cores."""
    if getattr(runner, "_started", False) and hasattr(runner, "client"):  # a started DaskTaskRunner
        with contextlib.suppress(Exception):  # a cluster that cannot say: the local count
            if count := len(runner.client.scheduler_info()["workers"]):  # an adaptive one may have none yet
                return count
    return orchestration.worker_count()


def batch_label(batch: Batch) -> str:
    """`store=s0001`, or `store=s0001..store=s0024 (24)` for a batch."""
    first, last = batch[0][0].label, batch[-1][0].label
    return first if len(batch) == 1 else f"{first}..{last} ({len(batch)})"


@task(name="split_segments", cache_policy=NO_CACHE)
def split_segments(spec: PipelineSpec, frame: Any) -> SegmentPlan:
    """The validated rows split by segment, in memory (the data is read and validated once)."""
    return plan_segments(spec, frame)


@task(name="find_segment_versions", **IO_TASK)
def find_segment_versions(name: str) -> dict[str, list[Any]]:
    """Every registered version of the spec's segment models, from one search."""
    return existing_segment_versions(name)


def _champion(job: SegmentJob, previous: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """An unchanged segment's champion: as the current router pins it (no registry call per
    segment; a search does not return aliases), else from its alias."""
    routes = previous or {}
    route = routes.get("fallback") if job.key is None else routes.get("segments", {}).get(job.key)
    if route is not None and route.get("model") == job.model:
        return str(route["version"]), str(route["digest"])
    return champion_of(job.model)


def _unchanged(spec: PipelineSpec, job: SegmentJob, existing: Any, previous: dict[str, Any] | None) -> SegmentOutcome:
    champion, digest = _champion(job, previous)
    metric = spec.primary_metric
    value = existing.tags.get(f"conveyor.metric.{metric}")
    return SegmentOutcome(
        job.model,
        job.label,
        job.key,
        str(existing.version),
        "unchanged",
        f"same rows, spec, contract and code as v{existing.version} ({existing.tags.get('conveyor.decision')})",
        metric,
        None if value is None else float(value),
        champion,
        digest,
    )


def _routes(
    spec: PipelineSpec,
    outcomes: list[SegmentOutcome],
    previous: dict[str, Any] | None,
    features: list[str],
    classes: list[Any],
) -> tuple[dict[str, Any] | None, list[str]]:
    """The routes this run leaves (None without an all-rows champion) and the stale segments'
    labels: segments gone from the data keep their previous route."""
    assert spec.segments is not None and spec.task is not None
    fallback = next(o for o in outcomes if o.key is None)
    if fallback.champion is None or fallback.champion_digest is None:
        return None, []
    segments = {
        o.key: route_entry(o.model, o.champion, o.champion_digest, o.label)
        for o in outcomes
        if o.key is not None and o.champion is not None and o.champion_digest is not None
    }
    present = {o.key for o in outcomes}
    stale = []
    for key, route in (previous or {}).get("segments", {}).items():
        if key in segments:
            continue
        if key in present:  # trained this time without a champion (its run failed): keeps serving
            segments[key] = route
        else:
            segments[key] = {**route, "stale": True}
            stale.append(str(route["label"]))
    entry = route_entry(fallback.model, fallback.champion, fallback.champion_digest, fallback.label)
    return routes_document(spec.segments.by, spec.task, classes, features, entry, segments), stale


def _same_routes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    def pins(doc: dict[str, Any] | None) -> Any:
        if doc is None:
            return None
        return (doc["fallback"]["version"], {k: v["version"] for k, v in doc["segments"].items()}, doc["features"])

    return pins(a) == pins(b)


def _summary_markdown(name: str, outcomes: list[SegmentOutcome], small: dict[str, int], stale: list[str]) -> str:
    rows = "\n".join(
        f"| {o.label} | `{o.model}` | {o.version or '-'} | {o.outcome} | "
        f"{'-' if o.value is None else f'{o.value:.4f}'} | {o.champion or '-'} | {o.reason.replace('|', '/')[:200]} |"
        for o in sorted(outcomes, key=lambda o: (o.outcome not in ("failed", "rejected"), o.label))
    )
    notes = ""
    if small:
        listed = ", ".join(f"{label} ({rows} rows)" for label, rows in small.items())
        notes += f"\n\nServed by the all-rows model (under min_rows): {listed}."
    if stale:
        notes += f"\n\nStale (gone from the data, still serving): {', '.join(stale)}."
    return f"""# {name}: {len(outcomes)} models

| segment | model | version | decision | metric | champion | reason |
| --- | --- | --- | --- | --- | --- | --- |
{rows}{notes}
"""


def train_segments(pipeline: PipelineSpec, data_path: str | None, allow_promotion: bool) -> TrainingResult:
    """Train a segmented spec: every segment model (and the all-rows model) that its rows changed,
    then the router version of `<name>` when a segment champion moved."""
    name = pipeline.name
    spec_digest = pipeline.digest()
    contract = digest_contract(pipeline)
    data_digest = digest_data(pipeline, data_path)
    if contract is not None:
        whole = lineage_of(data_digest, spec_digest, contract)
        if registry.model_tag(name, SEGMENTS_LINEAGE) == whole.key:
            champion = registry.alias_version(name, registry.CHAMPION)
            if champion is not None:
                reason = f"same data, contract, spec and code as the run that left router v{champion.version}"
                version = str(champion.version)
                return TrainingResult(name, version, "unchanged", reason, champion=version, reused=True)

    # A LocalCluster of our own, when Dask is asked for, starts now: its workers import while the
    # data is read and checked. Unasked, it starts once the models to train prove many.
    cluster = orchestration.FanoutCluster(orchestration.worker_count(), WARM)
    if orchestration.wants_local_cluster():
        cluster.start()
    try:
        return _load_and_train(pipeline, data_path, allow_promotion, spec_digest, cluster)
    finally:
        cluster.close()


def _load_and_train(
    pipeline: PipelineSpec,
    data_path: str | None,
    allow_promotion: bool,
    spec_digest: str,
    cluster: orchestration.FanoutCluster | None,
) -> TrainingResult:
    name = pipeline.name
    dataset = load_data(pipeline, data_path)
    target = pipeline.data.target
    if target not in dataset.frame.columns:
        raise DataError(f"{dataset.files[0]}: target column {target!r} is not in the data")
    pipeline = pipeline.for_task(pipeline.task or infer_task(dataset.frame[target]))
    validate_data(pipeline, dataset)  # once, on every row (drafts the contract on a first run)
    contract_digest = digest_contract(pipeline) or ""
    whole = lineage_of(dataset.digest, spec_digest, contract_digest)
    plan = split_segments(pipeline, dataset.frame)
    # One promotion lock for the spec over the whole fan-out and the router: a segment model's
    # promotions are guarded by its spec's lock (`registry.lock_subject`), taken once here.
    with registry.promotion_lock(name, timeout=600):
        return _train_and_route(pipeline, dataset, plan, whole, spec_digest, contract_digest, allow_promotion, cluster)


def _train_and_route(
    pipeline: PipelineSpec,
    dataset: Any,
    plan: SegmentPlan,
    whole: Lineage,
    spec_digest: str,
    contract_digest: str,
    allow_promotion: bool,
    cluster: orchestration.FanoutCluster | None = None,
) -> TrainingResult:
    """The segment models whose rows changed, each gated against its own champion, then the router
    version when a segment champion moved; run under the spec's promotion lock."""
    logger = get_run_logger()
    name, target = pipeline.name, pipeline.data.target
    existing = find_segment_versions(name)
    router_version, previous = current_routes(name)

    outcomes: list[SegmentOutcome] = []
    pending = []
    for job in plan.jobs:
        lineage = lineage_of(job.digest, spec_digest, contract_digest)
        versions = existing.get(job.model, [])
        found = reusable_version(versions, lineage.key, allow_promotion)
        if found is not None:
            outcomes.append(_unchanged(pipeline, job, found, previous))
        else:
            pending.append((job, lineage))
    logger.info("%s: %d models to train, %d unchanged", name, len(pending), len(outcomes))
    if pending:
        unasked = cluster is not None and not cluster.started and orchestration.auto_local_cluster(len(pending))
        if unasked and cluster is not None:
            logger.info(
                "%s: %d models on a %d-worker Dask LocalCluster", name, len(pending), orchestration.worker_count()
            )
            cluster.start()
        try:
            chosen = segment_task_runner(cluster)
        except Exception as exc:
            if not unasked:
                raise
            # Unasked, a cluster that cannot start is no reason to fail: the threads still work.
            logger.warning("%s: no Dask LocalCluster (%s); the models train on threads", name, exc)
            chosen = segment_task_runner()
        flow_run_id = str(flow_run.id or "")
        with chosen as runner:
            futures = [
                runner.submit(
                    train_segment_batch,
                    parameters={
                        "spec": pipeline,
                        "jobs": batch,
                        "allow_promotion": allow_promotion,
                        "flow_run_id": flow_run_id,
                        "label": batch_label(batch),
                    },
                )
                for batch in batches(pending, runner)
            ]
            outcomes += [outcome for future in futures for outcome in future.result()]
    if cluster is not None:
        cluster.close_soon()  # its workers, if any, stop while the router is registered

    time_column = pipeline.data.split.time_column
    features = [str(c) for c in feature_frame(pipeline, dataset.frame).columns if c != time_column]
    fallback_outcome = next(o for o in outcomes if o.key is None)
    classes: list[Any] = []
    if pipeline.task != "regression":
        classes = sorted(dataset.frame[target].dropna().unique().tolist(), key=str)
    routes, stale = _routes(pipeline, outcomes, previous, features, classes)
    kinds = ("promoted", "kept", "rejected", "unchanged", "failed")
    counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in kinds}
    reason = (
        f"{len(outcomes) - 1} segment models and the all-rows model: "
        + ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
        + (f"; {len(plan.small)} small segment(s) served by the all-rows model" if plan.small else "")
        + (f"; stale (gone from the data, still serving): {', '.join(stale)}" if stale else "")
    )
    table = _summary_markdown(name, outcomes, plan.small, stale)
    create_markdown_artifact(table, key=artifact_key("training", name), description=reason[:500])
    if routes is None:
        raise GateNotMet(f"{name}: the all-rows model has no champion ({fallback_outcome.reason}); nothing can serve")
    outcome = "kept"
    if not _same_routes(routes, previous):
        profile_from = (fallback_outcome.model, str(routes["fallback"]["version"]))
        decided = publish_router(pipeline, routes, profile_from, whole, reason)
        router_version = decided.split()[0].lstrip("v")
        outcome = "promoted"
    failed = [o for o in outcomes if o.outcome == "failed"]
    if failed:
        listed = "; ".join(f"{o.label}: {o.reason}" for o in failed[:5])
        raise DataError(f"{name}: {len(failed)} segment model(s) failed ({listed}); the others are served")
    registry.set_model_tag(name, SEGMENTS_LINEAGE, whole.key)
    if not pending:
        outcome = "unchanged"
    return TrainingResult(
        model=name,
        version=router_version,
        outcome=outcome,
        reason=reason,
        metric=pipeline.primary_metric,
        value=fallback_outcome.value,
        champion=router_version,
        reused=not pending,
    )
