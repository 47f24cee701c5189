"""Package, register and promote: the tasks that write to the registry (never cached)."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import registry
from conveyor.decision import Decision, decide
from conveyor.lineage import Lineage, pinned_requirements
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec


def model_card(
    spec: PipelineSpec,
    rows: int,
    lineage: Lineage,
    metrics: dict[str, float],
    champion: dict[str, float] | None,
    importance: dict[str, float],
    best_params: dict[str, Any],
) -> str:
    """A short Markdown model card: what the model is, what it saw, how it scored, its limits."""
    metric_rows = "\n".join(
        f"| {name} | {value:.4f} | {'' if champion is None or name not in champion else f'{champion[name]:.4f}'} |"
        for name, value in sorted(metrics.items())
    )
    top = "\n".join(f"- `{name}`: {value:.4f}" for name, value in list(importance.items())[:10])
    sensitive = ", ".join(spec.governance.sensitive_attributes) or "none declared"
    params = json.dumps({**spec.model.params, **best_params}, default=str, sort_keys=True)
    return f"""# Model card: {spec.name}

{spec.description or "No description in the spec."}

- Task: {spec.task}; estimator `{spec.estimator_path}` with parameters `{params}`
- Primary metric: {spec.primary_metric}; floors: {spec.evaluation.floors or "none"}; margin: {spec.evaluation.margin}
- Training data: {rows} rows, digest `{lineage.data_digest[:16]}`
- Spec digest `{lineage.spec_digest[:16]}`, code revision `{lineage.code_revision}`
- Governance: risk tier {spec.governance.risk_tier}; sensitive attributes: {sensitive}

## Holdout metrics (candidate vs current champion on the same rows)

| metric | candidate | champion |
| --- | --- | --- |
{metric_rows}

## Most important features (permutation importance on the holdout)

{top or "- not computed"}

## Limits

Measured on a held-out split of the training data only; real performance is measured by the
monitoring flow once ground truth arrives.
"""


@dataclass(frozen=True)
class Registered:
    version: str
    run_id: str
    model_uri: str


@task(name="package_model", **IO_TASK)
def package_model(
    run_id: str,
    model: Any,
    X_example: pd.DataFrame,
    card: str,
    extra: dict[str, str],
) -> registry.PackagedModel:
    """Log the pipeline with signature, input example, pinned requirements and its model card."""
    example = X_example.head(5)
    output = model.predict_proba(example) if hasattr(model, "predict_proba") else model.predict(example)
    return registry.package_model(
        run_id,
        model,
        example,
        output,
        list(pinned_requirements()),
        extra_files={"model_card.md": card, **extra},
    )


@task(name="register_model", **IO_TASK)
def register_model(name: str, packaged: registry.PackagedModel, run_id: str, tags: dict[str, str]) -> Registered:
    """Register a version named after the spec, tagged with its lineage; idempotent per run."""
    version = registry.register_version(
        name,
        packaged.model_uri,
        run_id,
        {**tags, "conveyor.artifact_digest": packaged.artifact_digest},
        model_id=packaged.model_id,
    )
    return Registered(str(version.version), run_id, packaged.model_uri)


@task(name="promote_model", cache_policy=NO_CACHE)
def promote_model(
    spec: PipelineSpec,
    registered: Registered,
    decision: Decision,
    compared_with: str | None,
    candidate: dict[str, float],
    rescore: Callable[[str], dict[str, float] | None],
    allow_promotion: bool,
) -> Decision:
    """Move `champion` when the decision says so, re-checking the champion under a per-model lock.

    Two runs racing to promote must not leave the worse one as champion: if the champion moved
    since we compared, score the new one on our holdout and decide again before moving the alias.
    """
    name = spec.name
    with registry.promotion_lock(name):
        current = registry.alias_version(name, registry.CHAMPION)
        current_version = None if current is None else str(current.version)
        if current_version != compared_with and decision.outcome == "promoted":
            champion_metrics = rescore(current_version) if current_version else None
            decision = decide(
                spec.primary_metric, candidate, champion_metrics, spec.evaluation.floors, spec.evaluation.margin
            )
            decision = Decision(decision.outcome, f"{decision.reason} (re-checked against v{current_version})")
        if decision.outcome == "promoted" and not allow_promotion:
            decision = Decision("kept", f"{decision.reason}; promotion not allowed for this run")
        registry.set_version_tags(
            name,
            registered.version,
            {"conveyor.decision": decision.outcome, "conveyor.decision_reason": decision.reason},
        )
        registry.record_audit(
            name,
            {
                "version": registered.version,
                "outcome": decision.outcome,
                "reason": decision.reason,
                "previous_champion": current_version or "",
                "champion_after": registered.version if decision.outcome == "promoted" else current_version or "",
                "actor": f"training-flow ({getpass.getuser()})",
                "run_id": registered.run_id,
            },
        )
        # Aliases move last: if anything above fails, the flow discards the version and no
        # alias has moved.
        registry.set_alias(name, registry.CHALLENGER, registered.version)
        if decision.outcome == "promoted":
            registry.set_alias(name, registry.CHAMPION, registered.version)
    return decision
