import pytest

from conveyor.spec import parse_spec
from flows.training import retrain_refusal


def spec(**monitoring):
    return parse_spec({"name": "m", "data": {"path": "x.csv", "target": "y"}, "monitoring": monitoring})


NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("monitoring", "trigger", "last_start", "refused_because"),
    [
        ({}, "conveyor.data.arrived", None, None),
        ({}, "conveyor.performance.degraded", None, None),
        ({}, "conveyor.drift.detected", None, "does not include 'drift'"),
        ({"retrain_on": ["drift"]}, "conveyor.drift.detected", None, None),
        ({"retrain_on": ["drift"]}, "conveyor.data.arrived", None, "does not include 'new_data'"),
        ({"cooldown_minutes": 60}, "conveyor.data.arrived", NOW - 59 * 60, "cooling down"),
        ({"cooldown_minutes": 60}, "conveyor.data.arrived", NOW - 61 * 60, None),
        ({"cooldown_minutes": 0}, "conveyor.data.arrived", NOW - 1, None),
        ({}, "something.else", None, "unknown trigger"),
    ],
)
def test_retrain_policy_and_cooldown(monitoring, trigger, last_start, refused_because) -> None:
    refusal = retrain_refusal(spec(**monitoring), trigger, last_start, NOW)
    if refused_because is None:
        assert refusal is None
    else:
        assert refusal is not None and refused_because in refusal
