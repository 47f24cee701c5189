"""Prefect events about models: the signals the retraining loop listens to."""

from __future__ import annotations

import uuid
from typing import Any

from prefect.events import emit_event

DATA_ARRIVED = "conveyor.data.arrived"
DRIFT_DETECTED = "conveyor.drift.detected"
PERFORMANCE_DEGRADED = "conveyor.performance.degraded"

# Trigger name -> the spec's `monitoring.retrain_on` entry that allows it.
POLICY = {DATA_ARRIVED: "new_data", DRIFT_DETECTED: "drift", PERFORMANCE_DEGRADED: "performance"}

_NAMESPACE = uuid.UUID("6f1c1a52-8a43-4c55-9d59-0c6b5e3a4b11")


def model_resource(model: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"conveyor.model.{model}",
        "prefect.resource.name": model,
        "conveyor.model": model,
    }


def emit_model_event(event: str, model: str, payload: dict[str, Any], dedupe_key: str | None = None) -> Any:
    """Emit `event` about `model`. A dedupe key gives the event a stable id, so the same fact
    (say, the same data digest) announced twice is one event to Prefect."""
    event_id = uuid.uuid5(_NAMESPACE, f"{event}:{model}:{dedupe_key}") if dedupe_key else None
    return emit_event(event=event, resource=model_resource(model), payload=payload, id=event_id)
