"""Drift statistics pinned to hand-computed values, and the profile/compare behaviour."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from conveyor.errors import DataError
from conveyor.report import DriftReport
from tasks.drift.compare import compare_to_profile
from tasks.drift.performance import degradation, performance_over_time
from tasks.drift.profile import OTHER, build_profile, load_profile, save_profile
from tasks.drift.stats import (
    bin_counts,
    chi_square_test,
    jensen_shannon,
    json_float,
    json_floats,
    ks_test,
    psi,
    wasserstein,
)

NUMERIC = ["age", "income", "score"]
CATEGORICAL = ["plan", "region"]


def make_frame(rows: int, seed: int, shift: float = 0.0, plan_mix: list[float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(40 + shift * 10, 10, rows),
            "income": rng.lognormal(10, 0.5, rows),
            "score": rng.uniform(0, 1, rows),
            "plan": rng.choice(["basic", "plus", "pro"], rows, p=plan_mix or [0.6, 0.3, 0.1]),
            "region": rng.choice(["north", "south", "east", "west"], rows),
        }
    )


@pytest.fixture(scope="module")
def profile() -> dict:
    return build_profile(make_frame(6000, seed=1), NUMERIC, CATEGORICAL, None, {"roc_auc": 0.8})


# --------------------------------------------------------------------------- statistics


def test_psi_matches_hand_computation() -> None:
    # PSI = sum((a - e) * ln(a / e)); e = [.5, .5], a = [.25, .75]
    # = (.25 - .5) ln(.5) + (.75 - .5) ln(1.5) = 0.173287 + 0.101366
    assert psi([50, 50], [25, 75]) == pytest.approx(0.274653, abs=1e-6)
    # Counts, not proportions: scaling either side changes nothing.
    assert psi([5, 5], [250, 750]) == pytest.approx(0.274653, abs=1e-6)
    assert psi([10, 20, 30], [10, 20, 30]) == 0.0


def test_psi_empty_bin_counts_as_eps() -> None:
    # e = [1, 0 -> 1e-4], a = [.9, .1]: (.9 - 1) ln(.9) + (.1 - 1e-4) ln(.1 / 1e-4)
    # = 0.0105361 + 0.0999 * 6.9077553 = 0.7006209
    assert psi([100, 0], [90, 10]) == pytest.approx(0.7006209, abs=1e-6)
    # Bins empty on both sides add (eps - eps) * ln(1) = 0.
    assert psi([100, 0, 0], [90, 10, 0]) == pytest.approx(0.7006209, abs=1e-6)


def test_psi_refuses_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="bins"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one count"):
        psi([0, 0], [1, 2])


def test_ks_statistic_and_exact_p_value() -> None:
    # ECDFs of [1,2,3,4] and [3,4,5,6] differ most at x = 2 (0.5 - 0) and x = 4 (1 - 0.5): D = 0.5
    statistic, _ = ks_test([1, 2, 3, 4], [3, 4, 5, 6])
    assert statistic == pytest.approx(0.5)
    # Disjoint samples of 3: D = 1, and of the C(6, 3) = 20 equally likely splits only 2 reach
    # D = 1 (all small values on one side), so the exact two-sided p = 2 / 20.
    statistic, p_value = ks_test([1, 2, 3], [4, 5, 6])
    assert statistic == 1.0
    assert p_value == pytest.approx(0.1)


def test_ks_drops_nulls() -> None:
    assert ks_test([1, 2, 3, None], np.array([4.0, 5.0, 6.0, np.nan])) == pytest.approx((1.0, 0.1))
    assert all(math.isnan(v) for v in ks_test([None, None], [1.0]))


def test_chi_square_matches_hand_computation() -> None:
    # Table [[30, 70], [50, 50]]: row totals 100, 100; column totals 80, 120; N = 200.
    # Expected per row [40, 60]; chi2 = 2 * (10^2/40 + 10^2/60) = 8.3333, dof 1.
    # With one degree of freedom chi2 = Z^2, so p = P(|Z| > sqrt(x)) = erfc(sqrt(x / 2)).
    statistic, p_value, dof = chi_square_test([30, 70], [50, 50])
    assert statistic == pytest.approx(8.333333, abs=1e-5)
    assert dof == 1
    assert p_value == pytest.approx(math.erfc(math.sqrt(8.333333 / 2)), rel=1e-5)
    assert p_value == pytest.approx(0.003892, abs=1e-5)


def test_chi_square_handles_a_category_missing_on_one_side() -> None:
    # [[10, 0], [5, 5]]: column totals 15, 5; expected per row [7.5, 2.5].
    # chi2 = 2 * (2.5^2/7.5 + 2.5^2/2.5) = 2 * (0.8333 + 2.5) = 6.6667
    statistic, _, dof = chi_square_test([10, 0], [5, 5])
    assert statistic == pytest.approx(6.666667, abs=1e-5)
    assert dof == 1
    # A category absent on both sides is dropped, not a division by zero.
    assert chi_square_test([10, 0, 0], [5, 5, 0])[0] == pytest.approx(6.666667, abs=1e-5)


def test_jensen_shannon_matches_hand_computation() -> None:
    # p = [.5, .5], q = [1, 0], m = [.75, .25]
    # KL(p||m) = .5 log2(.5/.75) + .5 log2(.5/.25) = -0.292481 + 0.5 = 0.207519
    # KL(q||m) = log2(1/.75) = 0.415037; JSD = (0.207519 + 0.415037) / 2 = 0.311278
    assert jensen_shannon([1, 1], [2, 0]) == pytest.approx(math.sqrt(0.311278), abs=1e-6)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon([3, 1], [6, 2]) == pytest.approx(0.0, abs=1e-9)


def test_wasserstein_is_the_mean_shift_for_translated_samples() -> None:
    # Moving every point by 2 costs 2 per unit of mass; normalised by a std of 4 it is 0.5.
    assert wasserstein([0, 1, 2, None], [2, 3, 4]) == pytest.approx(2.0)
    assert wasserstein([0, 1, 2], [2, 3, 4], scale=4.0) == pytest.approx(0.5)


def test_bin_counts_are_right_closed_with_a_null_bucket() -> None:
    counts, nulls = bin_counts(np.array([1.0, 2.0, 2.0, 3.0, np.nan, np.inf, -np.inf]), [2.0])
    assert counts.tolist() == [4, 2]  # (-inf, 2] holds -inf, 1, 2, 2; (2, inf) holds 3, inf
    assert nulls == 1
    counts, nulls = bin_counts(np.array([5.0, np.nan]), [])
    assert counts.tolist() == [1]
    assert nulls == 1


# --------------------------------------------------------------------------- profile


def test_profile_bins_are_deciles_at_observed_values() -> None:
    frame = pd.DataFrame({"x": np.arange(1.0, 101.0), "flag": [0] * 70 + [1] * 30})
    prof = build_profile(frame, ["x", "flag"], [], None, {})
    assert prof["numeric"]["x"]["edges"] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert prof["numeric"]["x"]["counts"] == [10] * 10
    # A 0/1 column: the deciles collapse to two cut points, no bin between 0 and 1.
    assert prof["numeric"]["flag"]["edges"] == [0, 1]
    assert prof["numeric"]["flag"]["counts"] == [70, 30, 0]
    assert prof["numeric"]["x"]["mean"] == pytest.approx(50.5)
    assert prof["rows"] == 100


def test_profile_keeps_top_categories_and_folds_the_rest() -> None:
    values = [f"c{i:02d}" for i in range(60) for _ in range(60 - i)]
    frame = pd.DataFrame({"c": values + [None] * 10})
    prof = build_profile(frame, [], ["c"], None, {})["categorical"]["c"]
    assert len(prof["counts"]) == 51
    assert prof["counts"]["c00"] == 60
    # The ten rarest (c50..c59) have 10 + 9 + ... + 1 = 55 rows.
    assert prof["counts"][OTHER] == 55
    assert prof["categories"] == 60
    assert prof["nulls"] == 10
    assert prof["null_fraction"] == pytest.approx(10 / len(frame))


def test_profile_is_strict_json_and_round_trips(tmp_path, profile) -> None:
    frame = make_frame(500, seed=3)
    frame.loc[::5, "age"] = np.nan
    frame.loc[::7, "plan"] = None
    prof = build_profile(frame, NUMERIC, CATEGORICAL, None, {"rmse": float("nan")})
    frame.loc[3, "income"] = np.inf  # a non-finite value is a null in the sample, as in version 1
    prof = build_profile(frame, NUMERIC, CATEGORICAL, frame["income"] > 50_000, {"rmse": float("nan")})
    path = save_profile(prof, tmp_path / "profile.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert load_profile(path) == prof  # every sampled value back, bit for bit
    assert None in load_profile(path)["sample"]["columns"]["age"]
    # The numeric samples are packed in the file; the categorical ones stay lists of strings.
    stored = json.loads(text)
    assert isinstance(stored["sample"]["columns"]["age"], str)
    assert isinstance(stored["sample"]["columns"]["plan"], list)
    # Deterministic: the same frame gives the same profile.
    assert build_profile(frame, NUMERIC, CATEGORICAL, None, {}) == build_profile(frame, NUMERIC, CATEGORICAL, None, {})


def test_profile_sample_is_capped_and_row_aligned(profile) -> None:
    sample = profile["sample"]
    assert sample["rows"] == 2000
    assert {len(v) for v in sample["columns"].values()} == {2000}


def test_a_version_1_profile_still_loads(tmp_path) -> None:
    """Models registered before the packed samples keep their monitoring."""
    frame = make_frame(300, seed=4)
    frame.loc[::4, "age"] = np.nan
    prof = build_profile(frame, NUMERIC, CATEGORICAL, None, {})
    old = tmp_path / "v1.json"
    old.write_text(json.dumps(dict(prof, version=1)))  # version 1 wrote the sample as JSON lists
    loaded = load_profile(old)
    assert loaded["sample"] == prof["sample"]
    assert (
        compare_to_profile(loaded, frame, domain_classifier=False).model_dump()
        == compare_to_profile(prof, frame, domain_classifier=False).model_dump()
    )


def test_a_damaged_packed_sample_is_named(tmp_path) -> None:
    prof = build_profile(make_frame(100, seed=5), NUMERIC, CATEGORICAL, None, {})
    path = save_profile(prof, tmp_path / "profile.json")
    stored = json.loads(path.read_text())
    stored["sample"]["columns"]["age"] = stored["sample"]["columns"]["age"][:-5] + "!"
    path.write_text(json.dumps(stored))
    with pytest.raises(DataError, match="profile.json: a packed sample column cannot be read"):
        load_profile(path)


def test_load_profile_refuses_other_files(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 99}')
    with pytest.raises(DataError, match="bad.json"):
        load_profile(bad)
    with pytest.raises(DataError, match="missing.json"):
        load_profile(tmp_path / "missing.json")


def test_profile_names_missing_columns() -> None:
    with pytest.raises(DataError, match="nope"):
        build_profile(make_frame(10, seed=0), ["nope"], [], None, {})


# --------------------------------------------------------------------------- compare


def test_same_distribution_flags_nothing(profile) -> None:
    report = compare_to_profile(profile, make_frame(6000, seed=2))
    assert report.drifted_features == []
    assert not report.drift_detected
    assert report.drift_share == 0.0
    assert max(f.psi for f in report.features) < 0.02
    assert report.domain is not None
    assert 0.4 < report.domain.auc < 0.6
    assert not report.domain.drifted


def test_shifted_numeric_and_changed_mix_are_flagged(profile) -> None:
    current = make_frame(6000, seed=2, shift=1.0, plan_mix=[0.1, 0.3, 0.6])
    report = compare_to_profile(profile, current)
    assert sorted(report.drifted_features) == ["age", "plan"]
    assert report.drift_detected
    assert report.drift_share == pytest.approx(2 / 5)
    by_name = {f.name: f for f in report.features}
    assert by_name["age"].test == "ks"
    assert by_name["age"].p_value < 1e-10
    assert by_name["age"].distance == pytest.approx(1.0, abs=0.15)  # one reference std
    assert by_name["plan"].test == "chi_square"
    assert by_name["plan"].p_value < 1e-10
    assert report.domain.drifted
    assert set(list(report.domain.importances)[:2]) == {"age", "plan"}


def test_unseen_category_is_flagged_and_named(profile) -> None:
    current = make_frame(3000, seed=4)
    current.loc[current.index[:1200], "region"] = "mars"
    report = compare_to_profile(profile, current, domain_classifier=False)
    region = next(f for f in report.features if f.name == "region")
    assert region.drifted
    assert region.new_categories == ["mars"]
    assert "(other)" in region.bins
    assert report.drifted_features == ["region"]


def test_null_surge_is_drift_and_all_null_column_is_handled(profile) -> None:
    current = make_frame(3000, seed=5)
    current.loc[current.index[::2], "income"] = np.nan
    current["score"] = np.nan
    current["plan"] = None
    report = compare_to_profile(profile, current, domain_classifier=False)
    by_name = {f.name: f for f in report.features}
    assert by_name["income"].null_fraction_current == pytest.approx(0.5)
    assert by_name["income"].drifted
    assert by_name["score"].drifted and by_name["score"].p_value is None
    assert by_name["plan"].drifted
    assert not by_name["age"].drifted


def test_nulls_present_on_both_sides_are_not_drift() -> None:
    reference, current = make_frame(4000, seed=6), make_frame(4000, seed=7)
    for frame in (reference, current):
        frame.loc[frame.index[::4], ["age", "region"]] = None
    prof = build_profile(reference, NUMERIC, CATEGORICAL, None, {})
    report = compare_to_profile(prof, current, domain_classifier=False)
    assert report.drifted_features == []
    assert {f.name: f.null_fraction_current for f in report.features}["age"] == pytest.approx(0.25)


def test_integer_categories_match_floats_widened_by_nulls() -> None:
    reference = pd.DataFrame({"code": np.random.default_rng(0).integers(1, 4, 3000)})
    current = reference.astype("float64")
    current.loc[0, "code"] = np.nan
    prof = build_profile(reference, [], ["code"], None, {})
    report = compare_to_profile(prof, current, domain_classifier=False)
    assert report.features[0].psi < 0.01
    assert report.features[0].new_categories == []


def test_missing_column_is_reported_as_drifted(profile) -> None:
    report = compare_to_profile(profile, make_frame(500, seed=8).drop(columns=["score"]))
    score = next(f for f in report.features if f.name == "score")
    assert score.drifted
    assert "missing" in score.note


def test_empty_batch_is_an_expected_failure(profile) -> None:
    with pytest.raises(DataError, match="no rows"):
        compare_to_profile(profile, make_frame(0, seed=0))


def test_prediction_drift() -> None:
    rng = np.random.default_rng(0)
    reference = make_frame(3000, seed=1)
    predictions = pd.DataFrame(
        {
            "prediction": rng.choice(["no", "yes"], 3000, p=[0.8, 0.2]),
            "proba_yes": rng.beta(2, 6, 3000),
        }
    )
    prof = build_profile(reference, NUMERIC, CATEGORICAL, predictions, {})
    assert set(prof["prediction"]["categorical"]) == {"prediction"}
    assert set(prof["prediction"]["numeric"]) == {"proba_yes"}
    same = pd.DataFrame(
        {
            "prediction": rng.choice(["no", "yes"], 3000, p=[0.8, 0.2]),
            "proba_yes": rng.beta(2, 6, 3000),
        }
    )
    shifted = pd.DataFrame(
        {
            "prediction": rng.choice(["no", "yes"], 3000, p=[0.4, 0.6]),
            "proba_yes": rng.beta(6, 2, 3000),
        }
    )
    current = make_frame(3000, seed=2)
    assert not compare_to_profile(prof, current, same, domain_classifier=False).prediction_drift
    report = compare_to_profile(prof, current, shifted, domain_classifier=False)
    assert report.prediction_drift
    assert report.drift_detected
    assert report.drifted_features == []
    assert {f.name for f in report.predictions if f.drifted} == {"prediction", "proba_yes"}


def test_report_is_strict_json_and_round_trips(profile) -> None:
    current = make_frame(1000, seed=9)
    current["score"] = np.nan
    report = compare_to_profile(profile, current)
    text = report.model_dump_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert DriftReport.model_validate_json(text) == report


# --------------------------------------------------------------------------- performance


def test_classification_performance_per_window() -> None:
    joined = pd.DataFrame(
        {
            "scored_at": pd.to_datetime(
                [
                    "2026-03-01 08:00",
                    "2026-03-01 09:00",
                    "2026-03-01 10:00",
                    "2026-03-01 11:00",
                    "2026-03-01 12:00",
                    "2026-03-02 08:00",
                    "2026-03-02 09:00",
                    "2026-03-04 09:00",
                ],
                utc=True,
            ),
            # Labels widened to float by the missing ones, predictions are ints: 1.0 == 1.
            "label": [1.0, 0.0, 1.0, 0.0, np.nan, 1.0, 1.0, np.nan],
            "prediction": [1, 0, 0, 1, 1, 1, 0, 0],
            "proba_0": [0.1, 0.8, 0.6, 0.4, 0.3, 0.2, 0.7, 0.9],
            "proba_1": [0.9, 0.2, 0.4, 0.6, 0.7, 0.8, 0.3, 0.1],
        }
    )
    perf = performance_over_time(joined, "binary")
    assert perf["rows"].tolist() == [5, 2, 1]  # 2026-03-03 scored nothing: no row for it
    assert perf["labelled"].tolist() == [4, 2, 0]
    day = perf.iloc[0]
    assert day["accuracy"] == pytest.approx(2 / 4)
    # AUC = share of (positive, negative) pairs ranked right: positives 0.9, 0.4 vs negatives
    # 0.2, 0.6 -> (0.9>0.2, 0.9>0.6, 0.4>0.2, 0.4<0.6) = 3/4.
    assert day["roc_auc"] == pytest.approx(0.75)
    # Day two holds one class only: accuracy yes, AUC undefined.
    assert perf.iloc[1]["accuracy"] == pytest.approx(0.5)
    assert math.isnan(perf.iloc[1]["roc_auc"])
    assert math.isnan(perf.iloc[2]["accuracy"])


def test_regression_performance_per_window() -> None:
    joined = pd.DataFrame(
        {
            "at": pd.to_datetime(["2026-03-01 01:00", "2026-03-01 02:00", "2026-03-01 03:00"]),
            "y": [1.0, 2.0, 4.0],
            "yhat": [2.0, 2.0, 1.0],
        }
    )
    perf = performance_over_time(joined, "regression", time_column="at", label_column="y", prediction_column="yhat")
    # errors 1, 0, -3: rmse = sqrt((1 + 0 + 9) / 3), mae = (1 + 0 + 3) / 3
    assert perf.iloc[0]["rmse"] == pytest.approx(math.sqrt(10 / 3))
    assert perf.iloc[0]["mae"] == pytest.approx(4 / 3)


def test_multiclass_performance_has_accuracy_and_macro_f1() -> None:
    joined = pd.DataFrame(
        {
            "scored_at": pd.to_datetime(["2026-03-01"] * 4),
            "label": ["a", "b", "c", "a"],
            "prediction": ["a", "b", "a", "a"],
        }
    )
    perf = performance_over_time(joined, "multiclass")
    assert perf.iloc[0]["accuracy"] == pytest.approx(0.75)
    # f1 per class: a = 2*1*(2/3)/(1+2/3) = 0.8, b = 1, c = 0 -> macro 0.6
    assert perf.iloc[0]["f1_macro"] == pytest.approx(0.6)


def test_performance_names_a_missing_column() -> None:
    with pytest.raises(DataError, match="'label'"):
        performance_over_time(pd.DataFrame({"scored_at": [], "prediction": []}), "binary")


def test_live_metrics_are_the_holdout_metrics_on_the_same_rows() -> None:
    """One metrics implementation: a window's figures equal tasks.evaluation's on those rows."""
    from tasks.evaluation import metrics_from_predictions

    rng = np.random.default_rng(3)
    proba = rng.uniform(size=200)
    truth = np.where(rng.uniform(size=200) < proba, "yes", "no")
    joined = pd.DataFrame(
        {
            "scored_at": pd.Timestamp("2026-03-01", tz="UTC"),
            "label": truth,
            "prediction": np.where(proba > 0.5, "yes", "no"),
            "proba_no": 1 - proba,
            "proba_yes": proba,
        }
    )
    metrics = ["roc_auc", "log_loss", "balanced_accuracy", "f1", "average_precision"]
    perf = performance_over_time(joined, "binary", metrics=metrics)
    expected = metrics_from_predictions("binary", ["no", "yes"], pd.Series(truth), np.c_[1 - proba, proba])
    assert list(perf.columns) == ["window", "rows", "labelled", *metrics]
    assert perf.iloc[0][metrics].to_dict() == pytest.approx({m: expected[m] for m in metrics})


def test_a_label_the_model_never_predicts_counts_as_wrong() -> None:
    joined = pd.DataFrame(
        {
            "scored_at": pd.to_datetime(["2026-03-01"] * 4, utc=True),
            "label": ["a", "b", "c", "new"],
            "prediction": ["a", "b", "c", "a"],
            "proba_a": [0.8, 0.1, 0.1, 0.6],
            "proba_b": [0.1, 0.8, 0.1, 0.2],
            "proba_c": [0.1, 0.1, 0.8, 0.2],
        }
    )
    perf = performance_over_time(joined, "multiclass", metrics=["accuracy", "log_loss", "roc_auc"])
    assert perf.iloc[0]["accuracy"] == pytest.approx(0.75)
    assert perf.iloc[0]["log_loss"] > 5  # probability 0 for the true class of one row
    # One-vs-rest: a, b and c are ranked perfectly, the unseen class (all scores 0) at chance.
    assert perf.iloc[0]["roc_auc"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)


def test_degradation_compares_the_latest_labelled_window_with_the_holdout() -> None:
    perf = pd.DataFrame(
        {"window": ["d1", "d2", "d3"], "labelled": [10, 10, 0], "roc_auc": [0.9, 0.7, math.nan], "rmse": [1, 2, 3]}
    )
    found = degradation("roc_auc", {"roc_auc": 0.8}, perf, 0.05)
    assert found is not None and (found["value"], found["window"]) == (0.7, "d2")
    assert degradation("roc_auc", {"roc_auc": 0.74}, perf, 0.05) is None
    # Scale-bound metrics: the tolerance is relative (3 > 2.5 * 1.05 is worse; 2.9 is within).
    assert degradation("rmse", {"rmse": 2.5}, perf, 0.05) is not None
    assert degradation("rmse", {"rmse": 2.9}, perf, 0.05) is None
    assert degradation("roc_auc", {}, perf, 0.05) is None and degradation("roc_auc", {"roc_auc": 1}, None, 0) is None


def test_a_small_batch_from_the_reference_distribution_does_not_drift_on_noise() -> None:
    """100 rows drawn like the reference: PSI alone (about 0.09 by chance over 10 bins) crosses 0.2
    for about one column in twenty, so a 30-feature batch 'drifts' on noise most of the time; with
    the sampling allowance under one in a hundred does. A real shift still drifts."""
    from tasks.drift.compare import compare_to_profile, sampling_psi
    from tasks.drift.profile import build_profile

    rng = np.random.default_rng(0)
    columns = [f"x{i}" for i in range(30)]
    reference = pd.DataFrame(rng.normal(size=(2000, 30)), columns=columns)
    profile = build_profile(reference, columns, [], None, {})
    flagged, raw_flags = 0, 0
    for seed in range(20):
        batch = pd.DataFrame(np.random.default_rng(100 + seed).normal(size=(100, 30)), columns=columns)
        report = compare_to_profile(profile, batch, domain_classifier=False)
        flagged += sum(f.drifted for f in report.features)
        raw_flags += sum((f.psi or 0) > 0.2 for f in report.features)
    checks = 20 * 30
    assert raw_flags > 0.03 * checks  # plain PSI > 0.2 fires on noise at this size
    assert flagged < 0.01 * checks
    shifted = pd.DataFrame(np.random.default_rng(7).normal(loc=1.0, size=(100, 30)), columns=columns)
    assert all(f.drifted for f in compare_to_profile(profile, shifted, domain_classifier=False).features)
    # The allowance is the chance PSI: (bins - 1)(1/n + 1/N), negligible at a million rows.
    assert sampling_psi(np.full(10, 200.0), np.full(10, 10.0)) == pytest.approx(9 * (1 / 100 + 1 / 2000))
    assert sampling_psi(np.full(10, 1e5), np.full(10, 1e5)) < 1e-4


def test_a_column_of_floats_becomes_strict_json_as_one_value_at_a_time_would() -> None:
    values = np.array([1.5, np.nan, -np.inf, 0.1 + 0.2, np.inf, -0.0, 1e300, 7.25])

    converted = json_floats(values)

    assert converted == [json_float(v) for v in values]
    assert converted[1] is None and converted[2] is None and converted[4] is None
    assert all(type(v) is float for v in converted if v is not None)
    json.dumps(converted, allow_nan=False)  # strict JSON: raises on NaN or infinity
    assert json_floats(np.array([2, 3], dtype="int32")) == [2.0, 3.0]
