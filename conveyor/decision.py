"""The promotion decision: a pure function of the gates and the champion comparison."""

from __future__ import annotations

import math
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


def usable(value: float | None) -> bool:
    """A metric that can be compared: present and a finite number (NaN never passes a gate)."""
    return value is not None and math.isfinite(value)


def floor_failures(metrics: dict[str, float], floors: dict[str, float]) -> list[str]:
    """Each floor the metrics miss, described; a floor is a minimum or, for losses, a maximum."""
    failures = []
    for name, bound in sorted(floors.items()):
        value = metrics.get(name)
        if value is None or not usable(value):
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
    value = candidate.get(metric)
    if value is None or not usable(value):
        return Decision("rejected", f"the primary metric {metric} could not be computed")
    if champion is None:
        return Decision("promoted", f"no champion to compare with; {metric} {_fmt(value)} passes every floor")
    best = champion.get(metric)
    if best is None or not usable(best):
        return Decision(
            "promoted",
            f"the champion's {metric} could not be computed on this holdout; {metric} {_fmt(value)} passes every floor",
        )
    gain = value - best if METRICS[metric][1] else best - value
    if gain > margin or (margin == 0 and gain > 0):
        return Decision(
            "promoted",
            f"{metric} {_fmt(value)} beats the champion's {metric} {_fmt(best)} by {_fmt(gain)} "
            f"(margin {_fmt(margin)})",
        )
    better = "higher" if METRICS[metric][1] else "lower"
    return Decision(
        "kept",
        f"{metric} {_fmt(value)} is not {better} than the champion's {metric} {_fmt(best)} by more than the margin "
        f"{_fmt(margin)}",
    )
