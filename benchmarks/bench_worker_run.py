"""A deployment run on the stack's worker, started the way `conveyor up` sets the pool against
Prefect 3.9's default: the pool's command `python -m prefect.engine` (the engine started directly)
against no command (the process worker first starts a workspace supervisor process, which then
starts the engine).

One SQLite stack (`conveyor up` in a copy of the project under benchmarks/.work/stack), then
pairs of runs of the `watch` deployment (a short flow: its fixed cost is most of it), the pool's
job template switched before each run, alternating which side goes first. Per run: seconds from
the run's creation (as the UI's Run button makes it) to Completed, and the CPU-seconds the whole
machine spent meanwhile (Linux `/proc/stat`, so run it with nothing else running). Medians.
Usage: benchmarks/bench_worker_run.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.stack.health import FLOW_RUN_COMMAND  # noqa: E402
from benchmarks.bench_stack import cli, environment, fresh_project  # noqa: E402
from benchmarks.common import machine, pair_summary, paired_runs, write_result  # noqa: E402

SIDES = {"engine directly": FLOW_RUN_COMMAND, "workspace supervisor (Prefect's default)": None}


def busy_cpu_seconds() -> float:
    """CPU-seconds every core of the machine has spent not idle since boot."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def one_run(client: Any, deployment_id: Any) -> tuple[float, float]:
    cpu, started = busy_cpu_seconds(), time.monotonic()
    run = client.create_flow_run_from_deployment(deployment_id, parameters={})
    while not (state := client.read_flow_run(run.id).state) or not state.is_final():
        time.sleep(0.1)
    seconds, spent = time.monotonic() - started, busy_cpu_seconds() - cpu
    if not state.is_completed():
        raise SystemExit(f"the watch run ended {state.name}: {state.message}")
    return seconds, spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "worker_run.json")
    args = parser.parse_args()
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolUpdate

    load = os.getloadavg()[0]
    root = fresh_project("worker-run")
    env = environment(root)
    try:
        cli(root, env, "up")
        with SyncPrefectClient(f"http://127.0.0.1:{env['CONVEYOR_PREFECT_PORT']}/api") as client:
            watch = client.read_deployment_by_name("watch/watch").id
            template = client.read_work_pool("conveyor").base_job_template

            def on(side: str) -> tuple[float, float]:
                chosen = copy.deepcopy(template)
                chosen["variables"]["properties"]["command"]["default"] = SIDES[side]
                client.update_work_pool("conveyor", WorkPoolUpdate(base_job_template=chosen))
                return one_run(client, watch)

            one_run(client, watch)  # the first run warms the page cache for both sides
            runs = paired_runs({side: functools.partial(on, side) for side in SIDES}, args.pairs)
    finally:
        subprocess.run([sys.executable, "-m", "app.commands_stack", "down"], cwd=root, env=env, capture_output=True)
    summary = pair_summary(runs, ("seconds", "cpu_s"))
    medians = summary["medians"]
    ours, default = medians["engine directly"], medians["workspace supervisor (Prefect's default)"]
    result = {
        "benchmark": "worker_run",
        "flow": "watch (deployment watch/watch)",
        "pairs": args.pairs,
        **summary,
        "machine": machine(load),
        "goals": {
            "a deployment run, Run to Completed": {
                "value": f"{ours['seconds']} s, {ours['cpu_s']} CPU-s (Prefect's default: "
                f"{default['seconds']} s, {default['cpu_s']} CPU-s)",
                "goal": "reported (no goal of its own: the pool's command against Prefect's default)",
                "met": None,
            }
        },
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
