"""The model card: what a reviewer reads about one version before it goes to production.

Markdown is the card's source (logged to the run, shown by the MLflow UI); `card_html` renders it
with markdown-it-py, raw HTML off, into a page from conveyor/templates (Jinja2, autoescape on).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from conveyor.lineage import Lineage
from conveyor.spec import PipelineSpec

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
