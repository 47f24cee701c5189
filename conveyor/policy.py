"""The retraining policy: whether an event-triggered run may train. A pure function, like the
promotion decision."""

from __future__ import annotations

from conveyor.events import POLICY
from conveyor.spec import PipelineSpec


def retrain_refusal(spec: PipelineSpec, trigger: str, last_start: float | None, now: float) -> str | None:
    """Why an event-triggered run must not train (None: it may): the spec's `retrain_on`
    policy, then the per-model cooldown since the last training run started, for the triggers
    in `monitoring.cooldown_on` (drift and performance by default: new data trains right away,
    and its digest already de-duplicates repeated announcements)."""
    policy = POLICY.get(trigger)
    if policy is None:
        return f"unknown trigger {trigger!r}; expected one of {sorted(POLICY)}"
    if policy not in spec.monitoring.retrain_on:
        return f"{trigger}: monitoring.retrain_on {list(spec.monitoring.retrain_on)} does not include {policy!r}"
    if policy not in spec.monitoring.cooldown_on:
        return None
    cooldown = spec.monitoring.cooldown_minutes * 60
    if last_start is not None and now - last_start < cooldown:
        waited = (now - last_start) / 60
        minutes = spec.monitoring.cooldown_minutes
        return f"{trigger}: cooling down ({waited:.1f} of {minutes:g} minutes since the last training run)"
    return None
