"""The promotion decision: a pure function of the gates and the champion comparison."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from conveyor.spec import METRICS

Outcome = Literal["promoted", "kept", "rejected"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def floor_failures(metrics: dict[str, float], floors: dict[str, float]) -> list[str]:
    """Each floor the metrics miss, described; a floor is a minimum or, for losses, a maximum."""
    failures = []
    for name, bound in sorted(floors.items()):
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name} could not be computed (floor {_fmt(bound)})")
            continue
        greater = METRICS[name][1]
        if (value < bound) if greater else (value > bound):
            relation = "below the floor" if greater else "above the ceiling"
            failures.append(f"{name} {_fmt(value)} is {relation} {_fmt(bound)}")
    return failures


def decide(
    metric: str,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    floors: dict[str, float],
    margin: float = 0.0,
) -> Decision:
    """promoted: passes floors and beats the champion by the margin (or there is none);
    kept: passes floors but is not better enough; rejected: misses a floor."""
    failures = floor_failures(candidate, floors)
    if failures:
        return Decision("rejected", "; ".join(failures))
    if metric not in candidate:
        return Decision("rejected", f"the primary metric {metric} could not be computed")
    value = candidate[metric]
    if champion is None or metric not in champion:
        return Decision("promoted", f"no champion to compare with; {metric} {_fmt(value)} passes every floor")
    best = champion[metric]
    gain = value - best if METRICS[metric][1] else best - value
    if gain > margin or (margin == 0 and gain > 0):
        return Decision(
            "promoted",
            f"{metric} {_fmt(value)} beats the champion's {_fmt(best)} by {_fmt(gain)} (margin {_fmt(margin)})",
        )
    return Decision(
        "kept", f"{metric} {_fmt(value)} does not beat the champion's {_fmt(best)} by the margin {_fmt(margin)}"
    )
