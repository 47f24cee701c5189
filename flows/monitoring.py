"""The monitoring flow: recent predictions against the model's reference profile, and real
performance where late ground truth has arrived; events when thresholds are crossed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from conveyor import predictions, registry
from conveyor.errors import DataError
from conveyor.events import emit_model_event
from conveyor.orchestration import run_tags
from conveyor.report import markdown_summary, render_report
from conveyor.spec import DEFAULT_METRIC, METRICS, PipelineSpec, find_spec
from tasks.drift import DriftReport, compare_to_profile, performance_over_time

DRIFT_EVENT = "conveyor.drift.detected"
DEGRADED_EVENT = "conveyor.performance.degraded"


@task(name="load_recent", cache_policy=NO_CACHE)
def load_recent(model: str, since: datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prediction log since a time, and the same rows joined to their latest true label."""
    recent = predictions.read(model, since)
    if recent.empty:
        raise DataError(f"monitoring {model}: the prediction log has no rows since {since or 'the start'}")
    return recent, predictions.joined(model, since)


@task(name="measure_drift", cache_policy=NO_CACHE)
def measure_drift(spec: PipelineSpec, profile: dict[str, Any], recent: pd.DataFrame) -> DriftReport:
    feature_columns = [*profile.get("numeric", {}), *profile.get("categorical", {})]
    missing = [column for column in feature_columns if column not in recent.columns]
    if missing:
        raise DataError(f"monitoring {spec.name}: the prediction log lacks feature columns {missing}")
    prediction_columns = [c for c in recent.columns if c == "prediction" or c.startswith("proba_")]
    return compare_to_profile(
        profile,
        recent[feature_columns],
        recent[prediction_columns] if prediction_columns else None,
        psi_threshold=spec.monitoring.psi_threshold,
        domain_auc_threshold=spec.monitoring.domain_auc_threshold,
    )


@task(name="measure_performance", cache_policy=NO_CACHE)
def measure_performance(task_type: str, joined: pd.DataFrame, window: str) -> pd.DataFrame | None:
    labelled = joined.dropna(subset=["label"]) if "label" in joined.columns else joined.iloc[0:0]
    if labelled.empty:
        return None
    return performance_over_time(joined, task_type, window=window)


def degradation(
    metric: str, holdout: dict[str, float], performance: pd.DataFrame | None, tolerance: float
) -> dict[str, Any] | None:
    """The latest labelled window's primary metric, when it is worse than the holdout's by more
    than the tolerance (relative for scale-bound metrics like rmse, absolute otherwise)."""
    if performance is None or metric not in performance.columns or metric not in holdout:
        return None
    measured = performance.dropna(subset=[metric])
    if measured.empty:
        return None
    latest = measured.iloc[-1]
    value, reference = float(latest[metric]), float(holdout[metric])
    greater = METRICS[metric][1]
    if metric in {"rmse", "mae"}:
        worse = value > reference * (1 + tolerance)
    else:
        worse = value < reference - tolerance if greater else value > reference + tolerance
    if not worse:
        return None
    return {
        "metric": metric,
        "value": value,
        "holdout": reference,
        "tolerance": tolerance,
        "window": str(latest["window"]),
        "labelled": int(latest.get("labelled", 0)),
    }


def _monitor_metric(task_type: str, primary: str, performance: pd.DataFrame | None) -> str:
    """The primary metric when the live windows measure it, else the task's robust fallback."""
    if performance is not None and primary in performance.columns:
        return primary
    return "accuracy" if task_type != "regression" else DEFAULT_METRIC["regression"]


def _run_name() -> str:
    return f"monitor-{flow_run.parameters.get('model', 'model')}"


@flow(name="monitoring", flow_run_name=_run_name)
def monitoring_flow(model: str, since_hours: float | None = 24.0, window: str = "1D") -> dict[str, Any]:
    """Compare recent predictions with the champion's training profile and measure real performance.

    Args:
        model: the model's name (its spec under pipelines/)
        since_hours: look at predictions logged in the last N hours (None: the whole log)
        window: the time window for performance over time (a pandas offset such as 1D or 6h)
    """
    logger = get_run_logger()
    spec = find_spec(model)
    run_tags(spec.name)
    champion = registry.alias_version(spec.name, registry.CHAMPION)
    if champion is None:
        raise DataError(f"monitoring {spec.name}: there is no champion to monitor")
    version = str(champion.version)
    task_type = champion.tags.get("conveyor.task", "binary")
    profile = registry.version_profile(spec.name, version)
    since = None if since_hours is None else datetime.now(UTC) - timedelta(hours=since_hours)

    recent, joined = load_recent(spec.name, since)
    drift = measure_drift(spec, profile, recent)
    performance = measure_performance(task_type, joined, window)
    holdout = {k: v for k, v in (profile.get("metrics") or {}).items() if v is not None}
    primary = spec.evaluation.metric or DEFAULT_METRIC[task_type]
    metric = _monitor_metric(task_type, primary, performance)
    degraded = degradation(metric, holdout, performance, spec.monitoring.performance_tolerance)

    html = render_report(spec.name, version, drift, performance, holdout)
    run_id = registry.start_run(
        spec.name,
        run_name=f"monitor-{spec.name}-v{version}",
        tags={
            "conveyor.kind": "monitoring",
            "conveyor.model": spec.name,
            "conveyor.model_version": version,
            "conveyor.prefect_flow_run_id": str(flow_run.id or ""),
        },
    )
    figures = {
        "drift_share": drift.drift_share,
        "drifted_features": float(len(drift.drifted_features)),
        "rows_current": float(drift.rows_current),
    }
    if drift.domain is not None and drift.domain.auc is not None:
        figures["domain_auc"] = float(drift.domain.auc)
    if performance is not None:
        latest = performance.dropna(subset=[metric]) if metric in performance.columns else performance.iloc[0:0]
        if not latest.empty:
            figures[f"live_{metric}"] = float(latest.iloc[-1][metric])
            figures["labelled_rows"] = float(performance["labelled"].sum())
    registry.log_metrics(run_id, {k: v for k, v in figures.items() if math.isfinite(v)})
    registry.log_text(run_id, html, "monitoring/report.html")
    registry.log_dict(run_id, drift.model_dump(mode="json"), "monitoring/drift.json")
    if performance is not None:
        registry.log_text(run_id, performance.to_csv(index=False), "monitoring/performance.csv")
    registry.end_run(run_id)
    registry.set_version_tags(spec.name, version, {"conveyor.last_monitoring_run": run_id})

    summary = markdown_summary(spec.name, version, drift, performance, holdout)
    create_markdown_artifact(
        f"{summary}\n\nFull report: MLflow run `{run_id}`, artifact `monitoring/report.html`.",
        key=f"monitoring-{''.join(c if c.isalnum() else '-' for c in spec.name.lower())}",
        description=f"{spec.name} v{version}: drift {'detected' if drift.drift_detected else 'none'}",
    )

    events = []
    if drift.drift_detected:
        emit_model_event(
            DRIFT_EVENT,
            spec.name,
            {
                "version": version,
                "drifted_features": drift.drifted_features,
                "drift_share": drift.drift_share,
                "domain_auc": None if drift.domain is None else drift.domain.auc,
                "monitoring_run_id": run_id,
            },
        )
        events.append(DRIFT_EVENT)
    if degraded is not None:
        emit_model_event(DEGRADED_EVENT, spec.name, {"version": version, **degraded, "monitoring_run_id": run_id})
        events.append(DEGRADED_EVENT)
    logger.info(
        "%s v%s: %d of %d features drifted; events: %s",
        spec.name,
        version,
        len(drift.drifted_features),
        len(drift.features),
        events or "none",
    )
    return {
        "model": spec.name,
        "version": version,
        "drift_detected": drift.drift_detected,
        "drifted_features": drift.drifted_features,
        "degraded": degraded,
        "events": events,
        "run_id": run_id,
        "figures": figures,
    }
