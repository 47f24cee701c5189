"""The monitoring report: one self-contained HTML page, and a markdown summary for Prefect.

Charts are PNGs drawn with matplotlib's Agg canvas (no pyplot, so no global backend state) and
inlined as base64 data URIs: the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from tasks.drift import DriftReport, FeatureDrift

REFERENCE_COLOR = "#4c72b0"
CURRENT_COLOR = "#dd8452"
DRIFT_COLOR = "#c44e52"
STABLE_COLOR = "#8c8c8c"
MAX_BARS = 30
MAX_BINS = 15

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


def render_report(
    model_name: str,
    version: str | int,
    drift: DriftReport,
    performance: pd.DataFrame | None,
    holdout_metrics: Mapping[str, float],
    top_features: int = 6,
) -> str:
    """The HTML page: summary, drift scores, distributions of the top features, performance."""
    title = f"Monitoring report: {model_name} version {version}"
    ranked = sorted(drift.features, key=lambda f: (not f.drifted, -(f.psi or 0.0)))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">{drift.rows_current:,} current rows compared with a reference '
        f"profile of {drift.rows_reference:,} rows.</p>",
        _summary_cards(drift),
        "<h2>Drift per feature</h2>",
        _figure(_psi_chart(drift.features, drift.psi_threshold), "PSI per feature", "psi-chart"),
        _feature_table(ranked),
    ]
    if ranked:
        parts.append("<h2>Reference and current distributions</h2>")
        parts.append('<div class="grid">')
        parts.extend(
            _figure(_distribution_chart(f), _distribution_caption(f)) for f in ranked[:top_features]
        )
        parts.append("</div>")
    if drift.predictions:
        parts.append("<h2>Prediction drift</h2>")
        parts.append(_feature_table(drift.predictions))
        parts.append('<div class="grid">')
        parts.extend(
            _figure(_distribution_chart(f), _distribution_caption(f)) for f in drift.predictions
        )
        parts.append("</div>")
    parts.append(_domain_section(drift))
    parts.append(_performance_section(performance, holdout_metrics))
    parts.append("</body></html>")
    return "\n".join(parts)


def markdown_summary(
    model_name: str,
    version: str | int,
    drift: DriftReport,
    performance: pd.DataFrame | None = None,
    holdout_metrics: Mapping[str, float] | None = None,
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
    latest = _latest_performance(performance, holdout_metrics or {})
    if latest:
        lines.extend(["", latest])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sections


def _summary_cards(drift: DriftReport) -> str:
    drifted = [f for f in drift.features if f.drifted]
    domain = drift.domain
    cards = [
        ("Drift detected", "yes" if drift.drift_detected else "no", drift.drift_detected),
        (
            "Drifted features",
            f"{len(drifted)} of {len(drift.features)} ({drift.drift_share:.0%})",
            bool(drifted),
        ),
        (
            "Domain classifier AUC",
            "n/a" if domain is None or domain.auc is None else f"{domain.auc:.3f}",
            domain is not None and domain.drifted,
        ),
        ("Prediction drift", "yes" if drift.prediction_drift else "no", drift.prediction_drift),
    ]
    html = ['<div class="cards">']
    for label, value, bad in cards:
        html.append(
            f'<div class="card">{escape(label)}<b class="{"bad" if bad else "ok"}">'
            f"{escape(value)}</b></div>"
        )
    html.append("</div>")
    if drifted:
        names = ", ".join(escape(f.name) for f in drifted)
        html.append(f"<p><strong>Drifted:</strong> {names}</p>")
    return "\n".join(html)


def _feature_table(features: Sequence[FeatureDrift]) -> str:
    head = (
        "<table><thead><tr><th>column</th><th>kind</th><th>PSI</th><th>test</th>"
        "<th>statistic</th><th>p-value</th><th>distance</th><th>nulls ref → cur</th>"
        "<th>new categories</th><th>drifted</th></tr></thead><tbody>"
    )
    rows = [head]
    for f in features:
        note = f" ({f.note})" if f.note else ""
        rows.append(
            f'<tr class="{"drifted" if f.drifted else ""}"><td>{escape(f.name)}</td>'
            f"<td>{f.kind}</td><td>{_num(f.psi)}</td><td>{_test_name(f)}</td>"
            f"<td>{_num(f.statistic)}</td><td>{_pvalue(f.p_value)}</td>"
            f"<td>{_num(f.distance)} <span class=muted>{f.distance_name}</span></td>"
            f"<td>{f.null_fraction_reference:.1%} → {f.null_fraction_current:.1%}</td>"
            f"<td>{escape(', '.join(f.new_categories))}</td>"
            f"<td>{'yes' if f.drifted else 'no'}{escape(note)}</td>"
            "</tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def _domain_section(drift: DriftReport) -> str:
    domain = drift.domain
    if domain is None:
        return ""
    html = ["<h2>Multivariate drift: domain classifier</h2>"]
    if domain.auc is None:
        html.append(f"<p>Not trained: {escape(domain.note)}.</p>")
        return "\n".join(html)
    html.append(
        f"<p>A gradient-boosted classifier trained to tell {domain.rows_current:,} current rows "
        f"from {domain.rows_reference:,} reference rows reaches a cross-validated ROC AUC of "
        f"<strong>{domain.auc:.3f}</strong> (0.5 means it cannot tell them apart; drift above "
        f"{domain.threshold:g}). The features it relies on, by the AUC lost when each is "
        "shuffled:</p>"
    )
    top = dict(list(domain.importances.items())[:10])
    html.append(_figure(_importance_chart(top), "Domain classifier: permutation importance"))
    return "\n".join(html)


def _performance_section(
    performance: pd.DataFrame | None, holdout_metrics: Mapping[str, float]
) -> str:
    html = ["<h2>Performance over time</h2>"]
    if performance is None or performance.empty or not performance["labelled"].any():
        html.append("<p>No ground truth has arrived for the scored rows yet.</p>")
        return "\n".join(html)
    metrics = [
        c
        for c in performance.columns
        if c not in {"window", "rows", "labelled"} and performance[c].notna().any()
    ]
    html.append('<div class="grid">')
    for metric in metrics:
        html.append(
            _figure(
                _performance_chart(performance, metric, holdout_metrics.get(metric)),
                f"{metric} per window"
                + (
                    f" against the holdout {holdout_metrics[metric]:.3f}"
                    if metric in holdout_metrics
                    else ""
                ),
            )
        )
    html.append("</div>")
    head = "".join(f"<th>{escape(str(c))}</th>" for c in ["window", "rows", "labelled", *metrics])
    rows = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    if holdout_metrics:
        cells = "".join(f"<td>{_num(holdout_metrics.get(m))}</td>" for m in metrics)
        rows.append(f"<tr><td>holdout</td><td></td><td></td>{cells}</tr>")
    for record in performance.to_dict("records"):
        cells = "".join(f"<td>{_num(record[m])}</td>" for m in metrics)
        rows.append(
            f"<tr><td>{escape(str(record['window']))}</td><td>{record['rows']:,}</td>"
            f"<td>{record['labelled']:,}</td>{cells}</tr>"
        )
    rows.append("</tbody></table>")
    html.append("".join(rows))
    return "\n".join(html)


def _latest_performance(performance: pd.DataFrame | None, holdout: Mapping[str, float]) -> str:
    if performance is None or performance.empty:
        return ""
    labelled = performance[performance["labelled"] > 0]
    if labelled.empty:
        return "No ground truth has arrived yet."
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
    ax.axvline(
        threshold, color="#222", linestyle="--", linewidth=1, label=f"threshold {threshold:g}"
    )
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
    ax.set_xticks(
        list(positions), [_short(b, 14) for b in bins], rotation=45, ha="right", fontsize=7
    )
    ax.set_ylabel("share of rows")
    ax.set_title(
        _short(feature.name, 40), fontsize=10, color=DRIFT_COLOR if feature.drifted else "#222"
    )
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
    ax.plot(
        pd.to_datetime(data["window"]), data[metric], marker="o", color=CURRENT_COLOR, label="live"
    )
    if holdout is not None:
        ax.axhline(holdout, color=REFERENCE_COLOR, linestyle="--", label="holdout")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _figure(fig: Figure, caption: str, element_id: str | None = None) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    ident = f' id="{element_id}"' if element_id else ""
    return (
        f'<figure{ident}><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


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
