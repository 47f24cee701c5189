"""What a new process pays to import the stack's libraries, with the bytecode `make install` compiles
and without it (every module compiled from source, as every process did where PYTHONDONTWRITEBYTECODE
is set and the install compiled nothing: this machine sets it).

"without" points PYTHONPYCACHEPREFIX at an empty folder, so Python finds no bytecode, and
PYTHONDONTWRITEBYTECODE keeps it from writing any. Each pair runs both, alternating which goes
first; wall and CPU (user + system) medians. Usage: benchmarks/bench_imports.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_embedded import run  # noqa: E402
from benchmarks.common import machine, pair_summary, paired_runs, write_result  # noqa: E402

# What a flow run on the worker, a `conveyor` command and the temporary server import between them.
IMPORTS = "import prefect, mlflow, sklearn, great_expectations, prefect.server.api.server"


def timed(env: dict[str, str]) -> tuple[float, float]:
    return run([sys.executable, "-c", IMPORTS], env, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "imports.json")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    base = {key: value for key, value in os.environ.items() if key != "PYTHONPYCACHEPREFIX"}
    base |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false"}
    with tempfile.TemporaryDirectory() as empty:
        envs = {"bytecode": base, "no_bytecode": base | {"PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}}
        timed(envs["bytecode"])  # the page cache warmed for both
        runs = paired_runs({side: functools.partial(timed, env) for side, env in envs.items()}, args.pairs)
    summary = pair_summary(runs, ("wall_s", "cpu_s"))
    medians = summary["medians"]
    result = {
        "benchmark": "imports",
        "imports": IMPORTS,
        "pairs": args.pairs,
        **summary,
        "machine": machine(load),
        "goals": {
            "imports in a new process, installed bytecode": {
                "value": f"{medians['bytecode']['wall_s']} s wall, {medians['bytecode']['cpu_s']} s CPU "
                f"(no bytecode: {medians['no_bytecode']['wall_s']} s, {medians['no_bytecode']['cpu_s']} s)",
                "goal": "reported (no goal of its own: the suite's and the commands' time is what it serves)",
                "met": None,
            }
        },
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
