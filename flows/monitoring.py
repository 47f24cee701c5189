"""The monitoring flow: recent predictions against the model's reference profile, and real
performance where late ground truth has arrived; events when thresholds are crossed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from conveyor.links import run_link
from conveyor.orchestration import run_tags
from conveyor.process_exit import exit_quickly
from conveyor.report import markdown_summary
from conveyor.spec import DEFAULT_METRIC, find_spec
from tasks.drift.performance import degradation, performance_over_time
from tasks.drift.steps import (
    NO_LABELS,
    announce_monitoring,
    figures,
    live_metrics,
    load_labels,
    load_recent,
    measure_drift,
    measure_performance,
    name_flow_run,
    outcome,
    publish_monitoring,
    render_monitoring_report,
    resolve_monitored,
)
from tasks.registry import check_champion_audit
from tasks.segment_monitoring import monitor_segments, segments_markdown

exit_quickly()  # a flow run on a worker is a process of its own (conveyor.process_exit)

REPORT = "monitoring/report.html"


def _run_name() -> str:
    return f"monitor-{flow_run.parameters.get('model', 'model')}"


def _key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "monitoring-" + "".join(c if c.isalnum() else "-" for c in name.lower())


@flow(name="monitoring", flow_run_name=_run_name)
def monitoring_flow(model: str, since_hours: float | None = 24.0, window: str = "1D") -> dict[str, Any]:
    """Compare recent predictions with the champion's training profile and measure real performance.

    Drift needs no labels; performance needs late labels joined by the spec's `data.id_column`.

    Args:
        model: the model's name (its spec under pipelines/)
        since_hours: look at predictions logged in the last N hours (None: the whole log)
        window: the time window for performance over time (a pandas offset such as 1D or 6h)
    """
    spec = find_spec(model)
    run_tags(spec.name)
    champion = resolve_monitored(spec.name)
    since = None if since_hours is None else datetime.now(UTC) - timedelta(hours=since_hours)

    recent = load_recent(spec.name, since)
    drift = measure_drift(spec, champion.profile, recent)
    labels = load_labels(spec, since)
    primary = spec.evaluation.metric or DEFAULT_METRIC[champion.task]
    performance = measure_performance(champion.task, labels, window, live_metrics(champion.task, primary))
    degraded = degradation(primary, champion.holdout, performance, spec.monitoring.performance_tolerance)

    verdict = outcome(drift, degraded)
    name = f"monitor-v{champion.version}-{verdict}"  # the MLflow run, in the model's experiment
    name_flow_run(f"monitor-{spec.name}-v{champion.version}-{verdict}")
    note = (labels.note or NO_LABELS).capitalize() + "."
    moved = check_champion_audit(spec.name)
    if moved:  # monitoring still watches what is served, and says it was not put there by Conveyor
        get_run_logger().warning("%s", moved)
        note = f"{note} Warning: {moved}."
    html = render_monitoring_report(spec.name, champion.version, drift, performance, champion.holdout, note)
    logged = figures(drift, performance, primary)
    run = publish_monitoring(
        spec.name, champion.version, name, html, drift, performance, logged, str(flow_run.id or "")
    )
    summary = markdown_summary(spec.name, champion.version, drift, performance, champion.holdout, note)
    metrics = live_metrics(champion.task, primary)
    segments = monitor_segments(  # a segmented model: each segment model against its own profile
        spec,
        champion.version,
        recent,
        labels.joined,
        lambda frame: performance_over_time(frame, champion.task, window=window, metrics=metrics),
        primary,
    )
    if segments:
        summary = f"{summary}\n## Segments\n\n{segments_markdown(segments)}\n"
    link = run_link(run.tracking_uri, run.experiment_id, run.run_id, REPORT)
    create_markdown_artifact(
        f"{summary}\nFull report: {link}\n",
        key=_key(spec.name),
        description=f"{spec.name} v{champion.version}: {verdict}",
    )
    events = announce_monitoring(spec.name, champion.version, drift, degraded, run.run_id)
    return {
        "model": spec.name,
        "version": champion.version,
        "drift_detected": drift.drift_detected,
        "drifted_features": drift.drifted_features,
        "degraded": degraded,
        "performance": labels.note or "measured",
        "events": events,
        "run_id": run.run_id,
        "run_name": name,
        "figures": logged,
        "unaudited_champion": moved,
        "segments": [health.as_dict() for health in segments],
    }
