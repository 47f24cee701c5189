"""Many-specs benchmark: N specs in one `conveyor train pipelines/*.yaml` against N separate runs of
the plain script (benchmarks/plain_train.py), and against N separate `conveyor train <spec>`
commands (each starting its own temporary Prefect server: what one command saves).

Every spec trains its own model on the same data (N x --rows rows, 20 columns, the training
benchmark's frame and drafted contract), into an empty MLflow store, with no Prefect API set.
Usage: benchmarks/bench_specs.py [--specs 50] [--rows 2000] [--no-separate] [--out benchmarks/results/specs.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import BIN, ROOT, base_env, draft, make_frame, write_csv  # noqa: E402

from benchmarks.common import write_result  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "specs"


def spec_text(name: str) -> str:
    return f"name: {name}\ndata:\n  path: ../data.csv\n  target: label\n"


def project(label: str, data: Path, names: list[str]) -> Path:
    """A fresh project: one spec and one copy of the drafted contract per model, the data linked."""
    home = WORK / label
    shutil.rmtree(home, ignore_errors=True)
    (home / "pipelines").mkdir(parents=True)
    os.link(data, home / "data.csv")
    for name in names:
        (home / "pipelines" / f"{name}.yaml").write_text(spec_text(name))
        shutil.copy(data.with_suffix(".expectations.json"), home / "pipelines" / f"{name}.expectations.json")
    return home


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result.stdout + result.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--specs", type=int, default=50)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--no-separate", action="store_true", help="skip N separate `conveyor train` commands")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "specs.json")
    args = parser.parse_args()
    names = [f"m{i:03d}" for i in range(args.specs)]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    data = WORK / "data.csv"
    write_csv(make_frame(args.rows), data)
    draft(data)

    home = project("one-command", data, names)
    env = base_env(home) | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    specs = [f"pipelines/{name}.yaml" for name in names]  # what the shell makes of pipelines/*.yaml
    one, output = run([str(BIN / "conveyor"), "train", *specs, "--verbose"], env, home)
    servers = output.count("Starting temporary server")
    one_wall = one
    print(f"one command, {args.specs} specs: {one_wall:.1f} s ({servers} temporary server)", flush=True)

    plain_total = 0.0
    home = project("plain", data, names)
    for name in names:
        command = [
            sys.executable,
            str(ROOT / "benchmarks" / "plain_train.py"),
            str(home / "data.csv"),
            "label",
            str(home / "pipelines" / f"{name}.expectations.json"),
            f"sqlite:///{home / 'plain.db'}",
            name,
        ]
        plain_total += run(command, base_env(home), home)[0]
    print(f"{args.specs} plain scripts: {plain_total:.1f} s", flush=True)

    separate_total = None
    if not args.no_separate:
        home = project("separate", data, names)
        env = base_env(home) | {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
        separate_total = sum(run([str(BIN / "conveyor"), "train", name], env, home)[0] for name in names)
        print(f"{args.specs} separate conveyor commands: {separate_total:.1f} s", flush=True)

    ratio = one_wall / plain_total
    result = {
        "benchmark": "specs",
        "specs": args.specs,
        "rows_per_spec": args.rows,
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "load_average_at_end": os.getloadavg()[0],
        "one_command_seconds": round(one_wall, 2),
        "temporary_servers_started": servers,
        "plain_scripts_seconds": round(plain_total, 2),
        "separate_commands_seconds": None if separate_total is None else round(separate_total, 2),
        "per_model_seconds": round(one_wall / args.specs, 2),
        "goals": {
            f"{args.specs} specs, one command / {args.specs} plain scripts": {
                "value": round(ratio, 2),
                "goal": "<= 1.0 (concurrent, one server)",
                "met": ratio <= 1.0,
            },
            "temporary servers per command": {"value": servers, "goal": 1, "met": servers == 1},
        },
    }
    if separate_total is not None:
        result["goals"][f"one command / {args.specs} separate commands"] = {
            "value": round(one_wall / separate_total, 2),
            "goal": "< 1.0",
            "met": one_wall < separate_total,
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
