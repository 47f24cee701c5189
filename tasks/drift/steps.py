"""The monitoring steps as Prefect tasks: read the log, measure drift and performance, publish, announce.

Drift needs no labels: it runs whenever predictions were logged. Performance needs late labels,
joined by the spec's id column; without one (or before any label arrives) the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from conveyor import predictions, registry
from conveyor.errors import DataError
from conveyor.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED, emit_model_event
from conveyor.orchestration import IO_TASK
from conveyor.report import DriftReport, render_report
from conveyor.spec import PipelineSpec
from tasks.drift.compare import compare_to_profile
from tasks.drift.performance import DEFAULT_METRICS, performance_over_time
from tasks.drift.profile import parse_profile

NO_ID_COLUMN = "no labels yet: set data.id_column to join late labels"
NO_LABELS = "no labels yet"


@dataclass(frozen=True)
class MonitoredVersion:
    """The champion being monitored, with what training recorded about it."""

    version: str
    task: str
    profile: dict[str, Any]

    @property
    def holdout(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.profile.get("metrics") or {}).items() if v is not None}


@dataclass(frozen=True)
class Labels:
    """The prediction log joined to its late labels, or None with the reason there are none."""

    joined: pd.DataFrame | None
    note: str


@dataclass(frozen=True)
class MonitoringRun:
    """Where the report went: an MLflow run (its experiment, for a link into the UI)."""

    run_id: str
    experiment_id: str
    name: str
    tracking_uri: str


def outcome(drift: DriftReport, degraded: dict[str, Any] | None) -> str:
    """One word for the runs list: drift, degraded, drift-degraded or ok."""
    words = [word for word, found in (("drift", drift.drift_detected), ("degraded", degraded)) if found]
    return "-".join(words) or "ok"


def figures(drift: DriftReport, performance: pd.DataFrame | None, metric: str) -> dict[str, float]:
    """The numbers logged as MLflow metrics of the monitoring run (finite ones only)."""
    found = {
        "drift_share": drift.drift_share,
        "drifted_features": float(len(drift.drifted_features)),
        "rows_current": float(drift.rows_current),
    }
    if drift.domain is not None and drift.domain.auc is not None:
        found["domain_auc"] = float(drift.domain.auc)
    if performance is not None and metric in performance.columns:
        measured = performance.dropna(subset=[metric])
        if not measured.empty:
            found[f"live_{metric}"] = float(measured.iloc[-1][metric])
            found["labelled_rows"] = float(performance["labelled"].sum())
    return {name: value for name, value in found.items() if math.isfinite(value)}


def live_metrics(task_type: str, primary: str) -> list[str]:
    """The metrics measured per window: the spec's primary metric first, then the task's defaults."""
    return list(dict.fromkeys([primary, *DEFAULT_METRICS[task_type]]))


@task(name="name_flow_run", **IO_TASK)
def name_flow_run(name: str) -> None:
    """Rename the current flow run once its outcome is known, so the runs list tells runs apart."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name)


@task(name="resolve_monitored", **IO_TASK)
def resolve_monitored(model: str) -> MonitoredVersion:
    """The champion's version, task and reference profile."""
    champion = registry.alias_version(model, registry.CHAMPION)
    if champion is None:
        raise DataError(f"monitoring {model}: there is no champion to monitor")
    version = str(champion.version)
    return MonitoredVersion(version, champion.tags.get("conveyor.task", "binary"), version_profile(model, version))


def version_profile(model: str, version: str) -> dict[str, Any]:
    """The reference profile stored with a version at training time."""
    return parse_profile(registry.version_profile_text(model, version), f"model {model} version {version}")


@task(name="load_recent", **IO_TASK)
def load_recent(model: str, since: datetime | None) -> pd.DataFrame:
    """The prediction log since a time; an expected error when nothing was logged."""
    recent = predictions.read(model, since)
    if recent.empty:
        raise DataError(f"monitoring {model}: the prediction log has no rows since {since or 'the start'}")
    return recent


@task(name="load_labels", **IO_TASK)
def load_labels(spec: PipelineSpec, since: datetime | None) -> Labels:
    """The log joined to the latest label per id; none (and why) without an id column or labels."""
    if not spec.data.id_column:
        return Labels(None, NO_ID_COLUMN)
    joined = predictions.joined(spec.name, since, id_column=spec.data.id_column)
    if predictions.LABEL not in joined.columns or joined[predictions.LABEL].isna().all():
        return Labels(None, NO_LABELS)
    return Labels(joined, "")


@task(name="measure_drift", cache_policy=NO_CACHE)
def measure_drift(spec: PipelineSpec, profile: dict[str, Any], recent: pd.DataFrame) -> DriftReport:
    """Features, predictions and the domain classifier against the reference profile."""
    feature_columns = [*profile.get("numeric", {}), *profile.get("categorical", {})]
    missing = [column for column in feature_columns if column not in recent.columns]
    if missing:
        raise DataError(f"monitoring {spec.name}: the prediction log lacks feature columns {missing}")
    prediction_columns = [c for c in recent.columns if c == predictions.PREDICTION or c.startswith("proba_")]
    return compare_to_profile(
        profile,
        recent[feature_columns],
        recent[prediction_columns] if prediction_columns else None,
        psi_threshold=spec.monitoring.psi_threshold,
        domain_auc_threshold=spec.monitoring.domain_auc_threshold,
    )


@task(name="measure_performance", cache_policy=NO_CACHE)
def measure_performance(task_type: str, labels: Labels, window: str, metrics: list[str]) -> pd.DataFrame | None:
    """The live metrics per time window, where labels arrived (None without labels)."""
    if labels.joined is None:
        return None
    return performance_over_time(labels.joined, task_type, window=window, metrics=metrics)


@task(name="render_monitoring_report", cache_policy=NO_CACHE)
def render_monitoring_report(
    model: str,
    version: str,
    drift: DriftReport,
    performance: pd.DataFrame | None,
    holdout: dict[str, float],
    performance_note: str,
) -> str:
    """The self-contained HTML report (charts drawn here: the costly part of publishing)."""
    return render_report(model, version, drift, performance, holdout, performance_note=performance_note)


@task(name="publish_monitoring", **IO_TASK)
def publish_monitoring(
    model: str,
    version: str,
    run_name: str,
    html: str,
    drift: DriftReport,
    performance: pd.DataFrame | None,
    metrics: dict[str, float],
    flow_run_id: str,
) -> MonitoringRun:
    """A monitoring run in MLflow with the report, the drift JSON and the live metrics; the
    version is tagged back with it."""
    run_id = registry.start_run(
        model,
        run_name=run_name,
        tags={
            "conveyor.kind": "monitoring",
            "conveyor.model": model,
            "conveyor.model_version": version,
            "conveyor.prefect_flow_run_id": flow_run_id,
        },
    )
    try:
        registry.log_metrics(run_id, metrics)
        registry.log_text(run_id, html, "monitoring/report.html")
        registry.log_dict(run_id, drift.model_dump(mode="json"), "monitoring/drift.json")
        if performance is not None:
            registry.log_text(run_id, performance.to_csv(index=False), "monitoring/performance.csv")
    except BaseException:
        registry.end_run(run_id, failed=True)
        raise
    registry.end_run(run_id)
    registry.set_version_tags(model, version, {"conveyor.last_monitoring_run": run_id})
    client = registry.client()
    return MonitoringRun(run_id, str(client.get_run(run_id).info.experiment_id), run_name, client.tracking_uri)


@task(name="announce_monitoring", cache_policy=NO_CACHE)  # no retries: an event sent twice is two events
def announce_monitoring(
    model: str, version: str, drift: DriftReport, degraded: dict[str, Any] | None, run_id: str
) -> list[str]:
    """Emit `conveyor.drift.detected` and `conveyor.performance.degraded` when they hold."""
    events = []
    if drift.drift_detected:
        payload = {
            "version": version,
            "drifted_features": drift.drifted_features,
            "drift_share": drift.drift_share,
            "domain_auc": None if drift.domain is None else drift.domain.auc,
            "monitoring_run_id": run_id,
        }
        emit_model_event(DRIFT_DETECTED, model, payload)
        events.append(DRIFT_DETECTED)
    if degraded is not None:
        emit_model_event(PERFORMANCE_DEGRADED, model, {"version": version, **degraded, "monitoring_run_id": run_id})
        events.append(PERFORMANCE_DEGRADED)
    get_run_logger().info("%s v%s: events %s", model, version, events or "none")
    return events
