"""What the benchmark scripts share: a free port, a Prefect server of their own, the result's tail.

Each script still measures its own thing; this module only holds the plumbing they had copied.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from conveyor.ports import free_port  # outside the ephemeral range: no client takes it first

BIN = Path(sys.executable).parent


def clean_env() -> dict[str, str]:
    """This process's environment without its Prefect, MLflow and Conveyor settings, so a benchmark's
    commands use only the stores and servers the benchmark sets up."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "CONVEYOR_"))}


class PrefectServer:
    """A Prefect server in its own folder for a benchmark's commands, stopped by its process group.

    `home` is emptied and holds the server's log; `env` is the whole environment the server gets
    (the caller strips or sets PREFECT_HOME and the rest). Entering returns the API URL once
    /api/health answers; a server not healthy within `deadline_s` seconds (a loaded machine starts
    it slowly) is stopped and raises.
    """

    def __init__(self, home: Path, env: dict[str, str], deadline_s: float) -> None:
        self.home, self.env, self.deadline_s = home, env, deadline_s

    def __enter__(self) -> str:
        import httpx

        port = free_port()
        shutil.rmtree(self.home, ignore_errors=True)
        self.home.mkdir(parents=True)
        self.log: IO[str] = open(self.home / "server.log", "w")  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the Prefect server did not start (log: {self.home / 'server.log'})")

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone if the server died
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


def machine(load_at_start: float | None = None) -> dict[str, Any]:
    """The machine a result was measured on: the load says how much other work shared the cores."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_1min_at_start": None if load_at_start is None else round(load_at_start, 2),
    }


Runs = dict[str, list[tuple[float, float]]]  # per side, each run's two figures


def paired_runs(measure: dict[str, Callable[[], tuple[float, float]]], pairs: int) -> Runs:
    """Each side's two figures, measured `pairs` times, alternating which side goes first (a drift in
    the machine's load then falls on both sides alike)."""
    runs: Runs = {side: [] for side in measure}
    sides = list(measure)
    for pair in range(pairs):
        for side in sides if pair % 2 == 0 else sides[::-1]:
            runs[side].append(measure[side]())
    return runs


def pair_summary(runs: Runs, names: tuple[str, str]) -> dict[str, Any]:
    """Per side the median of each of the two figures (named `names`), and every run, to 0.01."""
    return {
        "medians": {
            side: {name: round(statistics.median(run[i] for run in side_runs), 2) for i, name in enumerate(names)}
            for side, side_runs in runs.items()
        },
        "all": {side: [[round(value, 2) for value in run] for run in side_runs] for side, side_runs in runs.items()},
    }


def write_result(out: str | Path, result: dict[str, Any]) -> None:
    """Write the result file (benchmarks/run.py builds the README's table from it) and print the
    result as compact JSON on the last line of output, the scripts' common convention."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
