"""Monitoring per segment: each segment model's logged rows (the prediction log's `served_by`)
against that model's own reference profile, live performance where labels arrived, and events
that name the segment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from prefect import task

from conveyor import registry
from conveyor.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED, emit_model_event
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.drift.performance import degradation
from tasks.drift.steps import measure_drift, version_profile
from tasks.segments import ROUTER_KIND, SERVED_BY, load_routes

# Fewer logged rows than this for a segment: its drift is not measured (too noisy to mean anything).
MIN_SEGMENT_ROWS = 30


@dataclass(frozen=True)
class SegmentHealth:
    segment: str
    model: str
    version: str
    rows: int
    drift_detected: bool | None  # None: too few rows to say
    drifted_features: list[str] = field(default_factory=list)
    degraded: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def segment_health(
    spec: PipelineSpec,
    router_version: str,
    recent: pd.DataFrame,
    labelled: pd.DataFrame | None,
    performance: Any,
    primary: str,
) -> list[SegmentHealth]:
    """Drift (and performance, with labels) per segment model the router pins; events per segment.

    `performance(frame) -> DataFrame | None` measures the live metrics of a labelled frame."""
    routes = load_routes(spec.name, router_version)
    found = []
    for route in [routes["fallback"], *routes["segments"].values()]:
        served = f"{route['model']} v{route['version']}"
        rows = recent[recent[SERVED_BY] == served] if SERVED_BY in recent.columns else recent.iloc[:0]
        label = str(route["label"])
        if len(rows) < MIN_SEGMENT_ROWS:
            found.append(SegmentHealth(label, route["model"], str(route["version"]), len(rows), None))
            continue
        profile = version_profile(route["model"], str(route["version"]))
        drift = measure_drift.fn(spec, profile, rows)
        degraded = None
        if labelled is not None and SERVED_BY in labelled.columns:
            mine = labelled[labelled[SERVED_BY] == served]
            holdout = {k: float(v) for k, v in (profile.get("metrics") or {}).items() if v is not None}
            if len(mine):
                degraded = degradation(primary, holdout, performance(mine), spec.monitoring.performance_tolerance)
        events = []
        payload = {"parent": spec.name, "segment": label, "version": str(route["version"])}
        if drift.drift_detected:
            emit_model_event(DRIFT_DETECTED, route["model"], payload | {"drifted_features": drift.drifted_features})
            events.append(DRIFT_DETECTED)
        if degraded is not None:
            emit_model_event(PERFORMANCE_DEGRADED, route["model"], payload | {"degraded": degraded})
            events.append(PERFORMANCE_DEGRADED)
        found.append(
            SegmentHealth(
                label,
                route["model"],
                str(route["version"]),
                len(rows),
                drift.drift_detected,
                list(drift.drifted_features),
                degraded,
                events,
            )
        )
    return found


def segments_markdown(health: list[SegmentHealth]) -> str:
    """The per-segment table of the monitoring summary, what needs a person first."""
    rows = sorted(health, key=lambda h: (not h.events, h.drift_detected is None, h.segment))
    lines = ["| segment | model | rows | drift | performance | events |", "| --- | --- | --- | --- | --- | --- |"]
    for h in rows:
        drift = "too few rows" if h.drift_detected is None else ("drift: " + ", ".join(h.drifted_features) or "-")
        if h.drift_detected is False:
            drift = "none"
        perf = "degraded" if h.degraded else "-"
        lines.append(
            f"| {h.segment} | `{h.model}` v{h.version} | {h.rows} | {drift} | {perf} | {', '.join(h.events) or '-'} |"
        )
    return "\n".join(lines)


@task(name="monitor_segments", **IO_TASK)
def monitor_segments(
    spec: PipelineSpec,
    router_version: str,
    recent: pd.DataFrame,
    labelled: pd.DataFrame | None,
    performance: Any,
    primary: str,
) -> list[SegmentHealth]:
    """Drift and performance per segment model, with events that name the segment ([] when the
    champion is not a segment router)."""
    if registry.get_version(spec.name, router_version).tags.get("conveyor.kind") != ROUTER_KIND:
        return []
    return segment_health(spec, router_version, recent, labelled, performance, primary)
