import pytest

from conveyor.decision import decide


@pytest.mark.parametrize(
    ("metric", "candidate", "champion", "floors", "margin", "outcome", "reason_part"),
    [
        ("roc_auc", {"roc_auc": 0.80}, None, {}, 0.0, "promoted", "no champion"),
        ("roc_auc", {"roc_auc": 0.80}, None, {"roc_auc": 0.85}, 0.0, "rejected", "below the floor 0.85"),
        ("roc_auc", {"roc_auc": 0.90}, {"roc_auc": 0.85}, {"roc_auc": 0.8}, 0.0, "promoted", "beats"),
        ("roc_auc", {"roc_auc": 0.85}, {"roc_auc": 0.85}, {}, 0.0, "kept", "is not higher than"),
        ("roc_auc", {"roc_auc": 0.86}, {"roc_auc": 0.85}, {}, 0.02, "kept", "margin 0.02"),
        ("roc_auc", {"roc_auc": 0.88}, {"roc_auc": 0.85}, {}, 0.02, "promoted", "beats"),
        ("roc_auc", {"roc_auc": 0.70}, {"roc_auc": 0.85}, {}, 0.0, "kept", "is not higher than"),
        # Losses: lower is better, and their floors are ceilings.
        ("rmse", {"rmse": 40.0}, {"rmse": 50.0}, {}, 1.0, "promoted", "beats"),
        ("rmse", {"rmse": 49.5}, {"rmse": 50.0}, {}, 1.0, "kept", "is not lower than"),
        ("rmse", {"rmse": 60.0}, None, {"rmse": 55.0}, 0.0, "rejected", "above the ceiling 55"),
        # A secondary floor rejects even a better model.
        ("rmse", {"rmse": 40.0, "r2": 0.1}, {"rmse": 50.0}, {"r2": 0.3}, 0.0, "rejected", "r2 0.1 is below"),
        ("roc_auc", {"accuracy": 0.9}, None, {"roc_auc": 0.5}, 0.0, "rejected", "could not be computed"),
        # NaN is never a pass: not a floor, not the primary metric, and a NaN champion is no bar.
        ("roc_auc", {"roc_auc": float("nan")}, None, {"roc_auc": 0.5}, 0.0, "rejected", "could not be computed"),
        ("roc_auc", {"roc_auc": float("nan")}, None, {}, 0.0, "rejected", "primary metric roc_auc could not"),
        ("roc_auc", {"roc_auc": float("nan")}, {"roc_auc": 0.5}, {}, 0.0, "rejected", "could not be computed"),
        ("rmse", {"rmse": float("inf")}, {"rmse": 50.0}, {}, 0.0, "rejected", "could not be computed"),
        ("roc_auc", {"roc_auc": 0.7}, {"roc_auc": float("nan")}, {}, 0.0, "promoted", "champion's roc_auc could not"),
    ],
)
def test_decision_table(metric, candidate, champion, floors, margin, outcome, reason_part) -> None:
    decision = decide(metric, candidate, champion, floors, margin)
    assert decision.outcome == outcome
    assert reason_part in decision.reason
