"""`make bench`: run every benchmark, then print the README's table from benchmarks/results/*.json.

Usage: benchmarks/run.py [--only training,scoring,...] [--table-only]
Each benchmark writes its own JSON (with a `goals` section); this script only sequences them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "training", "package", "embedded", "validation", "scoring", "monitoring", "stack", "categories", "specs", "serving",
    "fleet", "card", "seaweedfs", "flow_call", "imports", "worker_run",
)  # fmt: skip


def table() -> str:
    rows = ["| benchmark | measure | value | goal | met |", "| --- | --- | --- | --- | --- |"]
    for name in BENCHMARKS:
        path = HERE / "results" / f"{name}.json"
        if not path.exists():
            rows.append(f"| {name} | not measured yet | | | |")
            continue
        goals = json.loads(path.read_text()).get("goals", {})
        for measure, goal in goals.items():
            if not isinstance(goal, dict):
                continue
            value = next((goal[k] for k in ("value", "measured", "median_seconds", "rss_bytes") if k in goal), "")
            target = next((goal[k] for k in ("goal", "goal_seconds", "goal_bytes") if k in goal), "")
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            met = {True: "yes", False: "no", None: "inconclusive"}[goal.get("met")]
            rows.append(f"| {name} | {measure} | {value} | {target} | {met} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        for name in args.only.split(","):
            print(f"== {name}", flush=True)
            subprocess.run([sys.executable, str(HERE / f"bench_{name}.py")], check=True)
    print(table())


if __name__ == "__main__":
    main()
