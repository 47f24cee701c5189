"""The monitoring report: what monitoring found (plain data models), one self-contained HTML page
rendered with Jinja2 (autoescape on), and a markdown summary for Prefect.

Charts are PNGs drawn with matplotlib's Agg canvas (no pyplot, so no global backend state) and
inlined as base64 data URIs: the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from functools import cache
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from jinja2 import Environment
    from matplotlib.figure import Figure

REFERENCE_COLOR = "#4c72b0"
CURRENT_COLOR = "#dd8452"
DRIFT_COLOR = "#c44e52"
STABLE_COLOR = "#8c8c8c"
MAX_BARS = 30
MAX_BINS = 15
NO_LABELS = "No ground truth has arrived for the scored rows yet."
TEMPLATES = Path(__file__).parent / "templates"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.3rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:10rem}
.card b{display:block;font-size:1.3rem}.bad{color:#b22}.ok{color:#282}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}tr.drifted td{background:#fbeaea}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.grid figure{margin:0}
figcaption{font-size:.8rem;color:#555}.muted{color:#777}
"""

ColumnKind = Literal["numeric", "categorical"]


# --------------------------------------------------------------------------- what monitoring found


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class FeatureDrift(_Model):
    """Drift of one column: PSI (the flag), a test (reported), a distance, and the binned shares."""

    name: str
    kind: ColumnKind
    psi: float | None
    test: Literal["ks", "chi_square"]
    statistic: float | None
    p_value: float | None
    distance: float | None
    distance_name: Literal["wasserstein_normed", "jensen_shannon"]
    null_fraction_reference: float
    null_fraction_current: float
    new_categories: list[str] = []
    drifted: bool
    note: str = ""
    bins: list[str] = []
    reference: list[float] = []
    current: list[float] = []


class DomainDrift(_Model):
    """Multivariate drift: how well a classifier tells current rows from reference rows."""

    auc: float | None
    auc_folds: list[float] = []
    rows_reference: int = 0
    rows_current: int = 0
    importances: dict[str, float] = {}
    threshold: float
    drifted: bool
    note: str = ""


class DriftReport(_Model):
    """Everything monitoring found in one batch; `model_dump_json()` is its JSON form."""

    rows_reference: int
    rows_current: int
    psi_threshold: float
    features: list[FeatureDrift]
    predictions: list[FeatureDrift] = []
    domain: DomainDrift | None = None
    drift_share: float
    prediction_drift: bool
    drift_detected: bool

    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted input features, highest PSI first (a missing column first of all)."""
        drifted = [f for f in self.features if f.drifted]
        return [f.name for f in sorted(drifted, key=lambda f: -(math.inf if f.psi is None else f.psi))]


# --------------------------------------------------------------------------- the page


def render_report(
    model_name: str,
    version: str | int,
    drift: DriftReport,
    performance: pd.DataFrame | None,
    holdout_metrics: Mapping[str, float],
    top_features: int = 6,
    performance_note: str = NO_LABELS,
) -> str:
    """The HTML page: summary, drift scores, distributions of the top features, performance.

    `performance_note` says why there is no performance section (no labels yet, or no id column).
    """
    ranked = sorted(drift.features, key=lambda f: (not f.drifted, -(f.psi or 0.0)))
    domain = drift.domain
    context = {
        "title": f"Monitoring report: {model_name} version {version}",
        "css": _CSS,
        "drift": drift,
        "cards": _summary_cards(drift),
        "drifted": [f.name for f in drift.features if f.drifted],
        "ranked": ranked,
        "psi_chart": _chart(_psi_chart(drift.features, drift.psi_threshold), "PSI per feature", "psi-chart"),
        "distributions": [_chart(_distribution_chart(f), _distribution_caption(f)) for f in ranked[:top_features]],
        "prediction_charts": [_chart(_distribution_chart(f), _distribution_caption(f)) for f in drift.predictions],
        "domain_chart": (
            _chart(
                _importance_chart(dict(list(domain.importances.items())[:10])),
                "Domain classifier: permutation importance",
            )
            if domain is not None and domain.auc is not None
            else None
        ),
        "performance": _performance_section(performance, holdout_metrics),
        "performance_note": performance_note,
        "holdout": dict(holdout_metrics),
    }
    return _environment().get_template("monitoring_report.html").render(context)


@cache
def _environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    env.filters.update(num=_num, pvalue=_pvalue, pct=lambda v: f"{v:.1%}", short=lambda v: f"{v:g}")
    env.filters["test_name"] = _test_name
    return env


def markdown_summary(
    model_name: str,
    version: str | int,
    drift: DriftReport,
    performance: pd.DataFrame | None = None,
    holdout_metrics: Mapping[str, float] | None = None,
    performance_note: str = NO_LABELS,
) -> str:
    """A markdown table of the drifted features (for a Prefect artifact), with the headline."""
    lines = [f"## Monitoring: {_md(model_name)} version {_md(str(version))}", ""]
    drifted = [f for f in drift.features if f.drifted]
    lines.append(
        f"**Drift detected: {'yes' if drift.drift_detected else 'no'}**. "
        f"{len(drifted)} of {len(drift.features)} features drifted "
        f"(PSI > {drift.psi_threshold:g}); {drift.rows_current:,} current rows."
    )
    if drift.domain is not None and drift.domain.auc is not None:
        lines.append(
            f"Domain classifier ROC AUC {drift.domain.auc:.3f} "
            f"(threshold {drift.domain.threshold:g}); prediction drift: "
            f"{'yes' if drift.prediction_drift else 'no'}."
        )
    lines.append("")
    if drifted:
        lines.append("| feature | kind | PSI | test | statistic | p-value | nulls ref → cur |")
        lines.append("| --- | --- | ---: | --- | ---: | ---: | ---: |")
        for f in sorted(drifted, key=lambda f: -(f.psi if f.psi is not None else math.inf)):
            lines.append(
                f"| {_md(f.name)} | {f.kind} | {_num(f.psi)} | {_test_name(f)} | "
                f"{_num(f.statistic)} | {_pvalue(f.p_value)} | "
                f"{f.null_fraction_reference:.1%} → {f.null_fraction_current:.1%} |"
            )
    else:
        lines.append("No feature drifted.")
    lines.extend(
        ["", _latest_performance(performance, holdout_metrics or {}) or f"Performance: {_md(performance_note)}"]
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sections


def _summary_cards(drift: DriftReport) -> list[dict[str, Any]]:
    drifted = [f for f in drift.features if f.drifted]
    domain = drift.domain
    return [
        {"label": "Drift detected", "value": "yes" if drift.drift_detected else "no", "bad": drift.drift_detected},
        {
            "label": "Drifted features",
            "value": f"{len(drifted)} of {len(drift.features)} ({drift.drift_share:.0%})",
            "bad": bool(drifted),
        },
        {
            "label": "Domain classifier AUC",
            "value": "n/a" if domain is None or domain.auc is None else f"{domain.auc:.3f}",
            "bad": domain is not None and domain.drifted,
        },
        {
            "label": "Prediction drift",
            "value": "yes" if drift.prediction_drift else "no",
            "bad": drift.prediction_drift,
        },
    ]


def _performance_section(performance: pd.DataFrame | None, holdout: Mapping[str, float]) -> dict[str, Any] | None:
    """Charts and table rows of the live metrics, or None when no label has arrived."""
    if performance is None or performance.empty or not performance["labelled"].any():
        return None
    metrics = [
        c for c in performance.columns if c not in {"window", "rows", "labelled"} and performance[c].notna().any()
    ]
    charts = []
    for metric in metrics:
        against = f" against the holdout {holdout[metric]:.3f}" if metric in holdout else ""
        charts.append(
            _chart(_performance_chart(performance, metric, holdout.get(metric)), f"{metric} per window{against}")
        )
    records = [{**record, "window": str(record["window"])} for record in performance.to_dict("records")]
    return {"metrics": metrics, "charts": charts, "records": records}


def _latest_performance(performance: pd.DataFrame | None, holdout: Mapping[str, float]) -> str:
    if performance is None or performance.empty:
        return ""
    labelled = performance[performance["labelled"] > 0]
    if labelled.empty:
        return ""
    last = labelled.iloc[-1]
    figures = [
        f"{m} {last[m]:.3f}" + (f" (holdout {holdout[m]:.3f})" if m in holdout else "")
        for m in labelled.columns
        if m not in {"window", "rows", "labelled"} and pd.notna(last[m])
    ]
    return f"Latest window with labels ({last['window']}, {int(last['labelled']):,} rows): " + (
        ", ".join(figures) + "."
    )


# --------------------------------------------------------------------------- charts


def _psi_chart(features: Sequence[FeatureDrift], threshold: float) -> Figure:
    from matplotlib.figure import Figure

    ranked = sorted(features, key=lambda f: -(f.psi if f.psi is not None else math.inf))[:MAX_BARS]
    ranked.reverse()
    fig = Figure(figsize=(8, 0.3 * len(ranked) + 1.2))
    ax = fig.subplots()
    values = [f.psi if f.psi is not None else 0.0 for f in ranked]
    colors = [DRIFT_COLOR if f.drifted else STABLE_COLOR for f in ranked]
    ax.barh([_short(f.name) for f in ranked], values, color=colors)
    ax.axvline(threshold, color="#222", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("population stability index")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _distribution_chart(feature: FeatureDrift) -> Figure:
    from matplotlib.figure import Figure

    bins, ref, cur = feature.bins, feature.reference, feature.current
    if len(bins) > MAX_BINS:
        # Keep the bins that matter most on either side; the rest are summed into one bar.
        order = sorted(range(len(bins)), key=lambda i: -max(ref[i], cur[i]))
        keep = sorted(order[: MAX_BINS - 1])
        rest = [i for i in range(len(bins)) if i not in keep]
        bins = [bins[i] for i in keep] + ["(rest)"]
        ref = [ref[i] for i in keep] + [sum(ref[i] for i in rest)]
        cur = [cur[i] for i in keep] + [sum(cur[i] for i in rest)]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    positions = range(len(bins))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], ref, width, label="reference", color=REFERENCE_COLOR)
    ax.bar([p + width / 2 for p in positions], cur, width, label="current", color=CURRENT_COLOR)
    ax.set_xticks(list(positions), [_short(b, 14) for b in bins], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(_short(feature.name, 40), fontsize=10, color=DRIFT_COLOR if feature.drifted else "#222")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _importance_chart(importances: Mapping[str, float]) -> Figure:
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.3 * len(names) + 1.2))
    ax = fig.subplots()
    ax.barh([_short(n) for n in names], [importances[n] for n in names], color=CURRENT_COLOR)
    ax.set_xlabel("ROC AUC lost when shuffled")
    fig.tight_layout()
    return fig


def _performance_chart(performance: pd.DataFrame, metric: str, holdout: float | None) -> Figure:
    from matplotlib.figure import Figure

    data = performance[performance[metric].notna()]
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.plot(pd.to_datetime(data["window"]), data[metric], marker="o", color=CURRENT_COLOR, label="live")
    if holdout is not None:
        ax.axhline(holdout, color=REFERENCE_COLOR, linestyle="--", label="holdout")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _chart(fig: Figure, caption: str, element_id: str | None = None) -> dict[str, str | None]:
    """A figure as the template shows it: an inline PNG data URI and its caption."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"id": element_id, "caption": caption, "src": f"data:image/png;base64,{data}"}


# --------------------------------------------------------------------------- formatting


def _distribution_caption(feature: FeatureDrift) -> str:
    verdict = "drifted" if feature.drifted else "stable"
    return f"{feature.name}: PSI {_num(feature.psi)} ({verdict})"


def _test_name(feature: FeatureDrift) -> str:
    return "KS" if feature.test == "ks" else "chi-square"


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    number = float(value)
    return f"{number:.3g}" if abs(number) < 1e-3 and number != 0 else f"{number:.3f}"


def _pvalue(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 1e-16" if value < 1e-16 else f"{value:.2g}"


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return escape(text, quote=False).replace("|", "\\|").replace("\n", " ")
