import pytest

from conveyor.policy import retrain_refusal
from conveyor.spec import parse_spec


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
        # New data trains right away by default; drift and performance wait out the cooldown.
        ({"cooldown_minutes": 60}, "conveyor.data.arrived", NOW - 59 * 60, None),
        ({"cooldown_minutes": 60}, "conveyor.performance.degraded", NOW - 59 * 60, "cooling down (59.0 of 60"),
        ({"cooldown_minutes": 60}, "conveyor.performance.degraded", NOW - 61 * 60, None),
        ({"retrain_on": ["drift"]}, "conveyor.drift.detected", NOW - 60, "cooling down"),
        ({"cooldown_minutes": 0}, "conveyor.performance.degraded", NOW - 1, None),
        # Per trigger: a spec can put new data under the cooldown too.
        ({"cooldown_on": ["new_data"]}, "conveyor.data.arrived", NOW - 59 * 60, "cooling down"),
        ({"cooldown_on": ["new_data"]}, "conveyor.performance.degraded", NOW - 59 * 60, None),
        ({}, "something.else", None, "unknown trigger"),
    ],
)
def test_retrain_policy_and_cooldown(monitoring, trigger, last_start, refused_because) -> None:
    refusal = retrain_refusal(spec(**monitoring), trigger, last_start, NOW)
    if refused_because is None:
        assert refusal is None
    else:
        assert refusal is not None and refused_because in refusal
