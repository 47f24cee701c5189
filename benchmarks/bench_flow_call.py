"""What a flow call costs beyond its body, with Prefect's heartbeats (its default) and without
(Conveyor under a command's temporary server and for fan-out children: conveyor.orchestration.no_heartbeats).

One temporary Prefect server (a fresh PREFECT_HOME), a flow whose body does nothing, called in
alternating pairs; medians. Usage: benchmarks/bench_flow_call.py [--pairs 10] [--out ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)

from benchmarks.common import machine, write_result  # noqa: E402

GOAL_SECONDS = 0.2  # a flow call without heartbeats: a few API calls, no second waited


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flow_call.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as home:
        os.environ["PREFECT_HOME"] = home
        from prefect import flow
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from conveyor.temporary_api import one_prefect_api

        @flow
        def nothing() -> None:
            return None

        timings: dict[str, list[float]] = {"heartbeats": [], "no_heartbeats": []}
        with one_prefect_api():  # heartbeats off inside; turned back on for the other half
            nothing()  # the first call pays the imports and the server's warm-up
            for _ in range(args.pairs):
                for label, frequency in (("heartbeats", 180), ("no_heartbeats", None)):
                    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: frequency}):
                        start = time.perf_counter()
                        nothing()
                        timings[label].append(time.perf_counter() - start)

    medians = {label: round(statistics.median(values), 3) for label, values in timings.items()}
    result = {
        "benchmark": "flow_call",
        "pairs": args.pairs,
        "median_seconds": medians,
        "seconds": {label: [round(v, 3) for v in values] for label, values in timings.items()},
        "machine": machine(load),
        "goals": {
            "empty flow call, no heartbeats": {
                "value": f"{medians['no_heartbeats']} s (Prefect's default heartbeats: {medians['heartbeats']} s)",
                "goal": f"<= {GOAL_SECONDS} s",
                "met": medians["no_heartbeats"] <= GOAL_SECONDS,
            }
        },
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
