"""The model card: what a reviewer reads about one version before it goes to production."""

from __future__ import annotations

import json
from typing import Any

from conveyor.lineage import Lineage
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
