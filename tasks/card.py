"""The model card: what a reviewer reads about one version before it goes to production.

Markdown is the card's source (logged to the run, shown by the MLflow UI); `card_html` renders it
with markdown-it-py, raw HTML off, into a page from conveyor/templates (Jinja2, autoescape on).
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from prefect import task

from conveyor import registry
from conveyor.decision import Decision
from conveyor.lineage import Lineage
from conveyor.orchestration import IO_TASK
from conveyor.spec import PipelineSpec
from tasks.evaluation import BOOTSTRAP_RESAMPLES, BOOTSTRAP_ROWS
from tasks.fairness import FairnessReport

TEMPLATES = Path(__file__).resolve().parent.parent / "conveyor" / "templates"


def cell(value: Any) -> str:
    """Text safe inside one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("\\", "\\\\").replace("|", "\\|")


def approvals_section(approvals: list[dict[str, Any]]) -> str:
    """The card's "Approvals" section: who signed off or refused, when, and what they said."""
    if not approvals:
        return "## Approvals\n\nNone recorded.\n"
    rows = "\n".join(
        "| " + " | ".join(cell(item.get(key, "")) for key in ("approver", "decision", "comment", "time")) + " |"
        for item in approvals
    )
    return f"## Approvals\n\n| approver | decision | comment | time |\n| --- | --- | --- | --- |\n{rows}\n"


@cache
def _renderer() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


@cache
def _template() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    return env.get_template("model_card.html")


def card_html(markdown: str) -> str:
    """The Markdown card as one self-contained HTML page (raw HTML in the Markdown is shown as text)."""
    from markupsafe import Markup

    title = next((line[2:].strip() for line in markdown.splitlines() if line.startswith("# ")), "Model card")
    body = Markup(_renderer().render(markdown))  # safe: markdown-it escapes, html is off
    return str(_template().render(title=title, body=body))


def _num(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _metrics_section(
    metrics: dict[str, float],
    intervals: dict[str, tuple[float, float]],
    champion: dict[str, float] | None,
    holdout_rows: int,
    seed: int,
) -> str:
    rows = "\n".join(
        f"| {name} | {_num(value)} | "
        + (f"{_num(intervals[name][0])} – {_num(intervals[name][1])}" if name in intervals else "–")
        + f" | {_num(None if champion is None else champion.get(name))} |"
        for name, value in sorted(metrics.items())
    )
    sampled = min(holdout_rows, BOOTSTRAP_ROWS)
    drawn = f"{sampled} of the {holdout_rows}" if sampled < holdout_rows else f"the {holdout_rows}"
    return (
        "| metric | candidate | 95 % CI | champion |\n| --- | --- | --- | --- |\n"
        f"{rows}\n\n95 % intervals: percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples of {drawn} holdout "
        f"rows (seed {seed}). The champion column is the current champion scored on the same rows"
        f"{'' if champion else ' (there is no champion yet)'}."
    )


def _importance_section(importance: dict[str, float], task: str | None) -> str:
    if not importance:
        return "Not computed."
    score = "R²" if task == "regression" else "balanced accuracy"
    rows = "\n".join(f"| `{cell(name)}` | {value:.4f} |" for name, value in list(importance.items())[:15])
    more = f"\n\n{len(importance) - 15} more columns in `feature_importance.json`." if len(importance) > 15 else ""
    return (
        f"Drop in holdout {score} when the column is shuffled (3 repeats; larger matters more).\n\n"
        f"| feature | importance |\n| --- | --- |\n{rows}{more}"
    )


def _fairness_section(spec: PipelineSpec, report: FairnessReport | None) -> str:
    governance = spec.governance
    if not governance.sensitive_attributes:
        return "No sensitive attributes declared (`governance.sensitive_attributes`): fairness not measured."
    parts = []
    if governance.exclude_sensitive:
        parts.append(
            "The sensitive attributes are left out of the model's features (`exclude_sensitive`); "
            "they are used here only, to measure the model per group."
        )
    if report is not None and report.positive is not None:
        parts.append(f"Selection rate: the share of rows predicted `{cell(report.positive)}`.")
    gate = governance.fairness
    parts.append(
        f"Gate: {gate.metric} at most {gate.max:g} for every attribute."
        if gate
        else "No fairness gate (`governance.fairness`): reported, not enforced."
    )
    attributes, min_rows = ([], 0) if report is None else (report.attributes, report.min_rows)
    for item in attributes:
        header = " | ".join(["group", "rows", *item.metrics, "note"])
        rows = "\n".join(
            "| "
            + " | ".join([cell(g["group"]), str(g["rows"]), *(_num(g[m]) for m in item.metrics)])
            + (" |  |" if g["group"] not in item.small else " | too few rows |")
            for g in item.groups
        )
        gaps = "\n".join(
            f"- {name}: {_num(value) if value is not None else 'not measured (fewer than two large groups)'}"
            for name, value in item.disparities.items()
        )
        small = (
            f"\n\nGroups with fewer than {min_rows} holdout rows (shown, left out of the disparities): "
            + ", ".join(cell(name) for name in item.small)
            if item.small
            else ""
        )
        parts.append(
            f"### {cell(item.attribute)}\n\n| {header} |\n|{' --- |' * (len(item.metrics) + 3)}\n{rows}\n\n"
            f"Disparities (largest gap between groups):\n\n{gaps}{small}"
        )
    return "\n\n".join(parts)


def model_card(
    spec: PipelineSpec,
    rows: int,
    lineage: Lineage,
    metrics: dict[str, float],
    champion: dict[str, float] | None,
    importance: dict[str, float],
    best_params: dict[str, Any],
    *,
    validation: str = "",
    intervals: dict[str, tuple[float, float]] | None = None,
    holdout_rows: int = 0,
    fairness: FairnessReport | None = None,
    decision: Decision | None = None,
) -> str:
    """The Markdown model card: intended use and owner, lineage and contract, holdout metrics with
    95 % intervals next to the champion's, the gates' decision, importance, fairness per group."""
    governance = spec.governance
    params = json.dumps({**spec.model.params, **best_params}, default=str, sort_keys=True)
    sensitive = ", ".join(f"`{cell(a)}`" for a in governance.sensitive_attributes) or "none declared"
    gates = "" if decision is None else f"\n\n## Gates\n\n**{decision.outcome}**: {decision.reason}"
    return f"""# Model card: {spec.name}

{spec.description or "No description in the spec."}

## Intended use

- Intended use: {governance.intended_use or "not stated (`governance.intended_use`)"}
- Owner: {governance.owner or "not stated (`governance.owner`)"}
- Risk tier: {governance.risk_tier}; approvers: {", ".join(governance.approvers) or "none"}
- Sensitive attributes: {sensitive}

## Model

- Task: {spec.task}; estimator `{spec.estimator_path}` with parameters `{params}`
- Primary metric: {spec.primary_metric}; floors: {spec.evaluation.floors or "none"}; margin: {spec.evaluation.margin}

## Data lineage

- Training data: {rows} rows ({holdout_rows} held out), data digest `{lineage.data_digest}`
- Contract digest `{lineage.contract_digest}`; validation: {validation or "not recorded"}
- Spec digest `{lineage.spec_digest}`; code digest `{lineage.code_digest}`, revision `{lineage.code_revision}`

## Holdout metrics

{_metrics_section(metrics, intervals or {}, champion, holdout_rows, spec.data.split.seed)}{gates}

## Permutation importance

{_importance_section(importance, spec.task)}

## Fairness

{_fairness_section(spec, fairness)}

## Limits

Measured on a held-out split of the training data only; real performance is measured by the
monitoring flow once ground truth arrives.
"""


@task(name="log_model_card", **IO_TASK)
def log_model_card(run_id: str, markdown: str) -> None:
    """The card at the top of the run's artifacts: `model_card.md` and its HTML copy `model_card.html`."""
    registry.log_text(run_id, markdown, "model_card.md")
    registry.log_text(run_id, card_html(markdown), "model_card.html")
