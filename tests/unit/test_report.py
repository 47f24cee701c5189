"""The monitoring report: self-contained HTML and the markdown summary."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conveyor.links import model_version_link, run_link
from conveyor.report import DriftReport, markdown_summary, render_report
from tasks.drift.compare import compare_to_profile
from tasks.drift.performance import performance_over_time
from tasks.drift.profile import build_profile

NUMERIC = ["tenure <months>", "spend"]
CATEGORICAL = ["plan|tier"]


def frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mix = [0.2, 0.3, 0.5] if shift else [0.5, 0.3, 0.2]
    return pd.DataFrame(
        {
            "tenure <months>": rng.normal(24 + 12 * shift, 6, rows),
            "spend": rng.gamma(2.0, 30.0, rows),
            "plan|tier": rng.choice(["basic", "plus", "pro"], rows, p=mix),
        }
    )


@pytest.fixture(scope="module")
def drift() -> DriftReport:
    profile = build_profile(frame(3000, seed=1), NUMERIC, CATEGORICAL, None, {"accuracy": 0.9})
    return compare_to_profile(profile, frame(3000, seed=2, shift=1.0))


@pytest.fixture(scope="module")
def performance() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = 300
    proba = rng.uniform(size=rows)
    joined = pd.DataFrame(
        {
            "scored_at": pd.date_range("2026-03-01", periods=rows, freq="h", tz="UTC"),
            "prediction": (proba > 0.5).astype(int),
            "proba_0": 1 - proba,
            "proba_1": proba,
            "label": np.where(rng.uniform(size=rows) < 0.6, (rng.uniform(size=rows) < proba).astype(float), np.nan),
        }
    )
    return performance_over_time(joined, "binary")


def test_report_names_drifted_features_and_is_self_contained(drift, performance) -> None:
    assert sorted(drift.drifted_features) == ["plan|tier", "tenure <months>"]
    html = render_report("churn", 3, drift, performance, {"accuracy": 0.9, "roc_auc": 0.8})
    assert html.startswith("<!DOCTYPE html>")
    assert "churn version 3" in html
    # Names are escaped, not injected as markup.
    assert "tenure &lt;months&gt;" in html
    assert "tenure <months>" not in html
    assert "plan|tier" in html
    # Nothing is fetched: no URL at all, no external scripts or stylesheets.
    assert "http://" not in html and "https://" not in html
    for attribute in re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', html):
        assert attribute.startswith("data:image/png;base64,"), attribute
    assert "<script" not in html and "<link" not in html


def test_report_charts_cover_scores_distributions_domain_and_performance(drift, performance) -> None:
    html = render_report("churn", 3, drift, performance, {"accuracy": 0.9})
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', html)
    captions = " ".join(images)
    assert images[0] == "PSI per feature"
    # One distribution chart per feature (three here), drifted ones first.
    assert [a for a in images if ": PSI" in a][0].split(":")[0] in {
        "plan|tier",
        "tenure &lt;months&gt;",
    }
    assert len([a for a in images if ": PSI" in a]) == 3
    assert "Domain classifier" in captions
    assert "accuracy per window against the holdout 0.900" in captions
    assert "roc_auc per window" in captions
    assert f"{drift.domain.auc:.3f}" in html


def test_report_without_labels_says_so(drift) -> None:
    html = render_report("churn", "7", drift, None, {})
    assert "No ground truth has arrived" in html
    assert "per window" not in html


def test_markdown_lists_only_drifted_features(drift, performance) -> None:
    text = markdown_summary("churn", 3, drift, performance, {"accuracy": 0.9})
    assert "**Drift detected: yes**" in text
    assert "2 of 3 features drifted" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| feature | kind | PSI")
    rows = table[2:]
    assert len(rows) == 2
    # A pipe in a column name is escaped so the table keeps its shape.
    assert any(row.startswith("| plan\\|tier | categorical") for row in rows)
    assert not any("spend" in row for row in rows)
    # Angle brackets are escaped so a markdown renderer does not take them for HTML.
    assert any(row.startswith("| tenure &lt;months&gt; | numeric") for row in rows)
    assert "holdout 0.900" in text


def test_markdown_without_drift() -> None:
    profile = build_profile(frame(2000, seed=1), NUMERIC, CATEGORICAL, None, {})
    report = compare_to_profile(profile, frame(2000, seed=3), domain_classifier=False)
    text = markdown_summary("churn", 1, report)
    assert "**Drift detected: no**" in text
    assert "No feature drifted." in text
    assert "| feature |" not in text


def test_a_feature_named_like_markup_is_escaped_everywhere() -> None:
    """Autoescape: a column name is text in the page, never a script."""
    hostile = "<script>alert('x')</script>"
    reference = pd.DataFrame({hostile: np.arange(400.0) % 40, "plan": ["a", "b"] * 200})
    current = pd.DataFrame({hostile: np.arange(400.0) % 40 + 30, "plan": ["a", "b"] * 200})
    profile = build_profile(reference, [hostile], ["plan"], None, {})
    report = compare_to_profile(profile, current, domain_classifier=False)
    assert report.drifted_features == [hostile]
    html = render_report("churn<b>", 1, report, None, {}, performance_note="No labels <yet>.")
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "churn&lt;b&gt;" in html and "No labels &lt;yet&gt;." in html
    text = markdown_summary("churn", 1, report)
    assert "<script" not in text and "&lt;script&gt;" in text


def test_report_shows_why_performance_is_missing(drift) -> None:
    html = render_report("churn", 2, drift, None, {}, performance_note="No labels yet: set data.id_column.")
    assert "<p>No labels yet: set data.id_column.</p>" in html
    text = markdown_summary("churn", 2, drift, None, None, "No labels yet: set data.id_column.")
    assert text.rstrip().endswith("Performance: No labels yet: set data.id_column.")


@pytest.mark.parametrize(
    ("tracking_uri", "expected"),
    [
        ("sqlite:////tmp/mlflow.db", "MLflow run `abc123def`, artifact `monitoring/report.html`"),
        (
            "http://127.0.0.1:5000/",
            "[monitoring/report.html in MLflow run abc123de]"
            "(http://127.0.0.1:5000/#/experiments/7/runs/abc123def/artifacts/monitoring/report.html)",
        ),
    ],
)
def test_run_links_point_into_the_mlflow_ui_only_for_a_server(tracking_uri: str, expected: str) -> None:
    assert run_link(tracking_uri, "7", "abc123def", "monitoring/report.html") == expected


def test_model_version_links() -> None:
    assert model_version_link("sqlite:///x.db", "churn", "3") == "model `models:/churn/3`"
    assert (
        model_version_link("https://mlflow.example.org", "churn", "3")
        == "[model churn v3](https://mlflow.example.org/#/models/churn/versions/3)"
    )
