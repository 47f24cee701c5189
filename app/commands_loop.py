"""`conveyor score | feedback | monitor | watch`: the closed loop after training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.console import Verbose, flow_result, quiet_prefect, say
from conveyor.settings import user_path
from conveyor.temporary_api import TemporaryAPI, begin_temporary_api, one_prefect_api


def _shown(path: str) -> str:
    from tasks.data import display_path

    return display_path(path)


def _warm(starting: TemporaryAPI | None, *modules: str) -> None:
    """Import now what the flow imports on its way, while the command's temporary server starts.

    The main thread would otherwise wait for the server idle (2.3 s of a `conveyor score` here,
    py-spy) and import these after it, on the flow's path: `conveyor score` of 80 rows took 6.9 s
    instead of 9.4 s (5 alternating pairs, medians). `monitor` gained nothing from warming
    matplotlib, measured the same way, so it does not warm. Nothing when a server is already set.
    """
    if starting is None:
        return
    import importlib

    for module in modules:
        importlib.import_module(module)


def score(
    name: Annotated[str, typer.Argument(help="The model's name (its spec under pipelines/).")],
    input: Annotated[str, typer.Option("--input", "-i", help="Rows to score: .csv or .parquet.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write them: .csv or .parquet.")],
    version: Annotated[str | None, typer.Option(help="Score with this version instead of the champion.")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk (bounds the memory).")] = 250_000,
    verbose: Verbose = False,
) -> None:
    """Score a file with the champion (or --version), streamed; every row is logged."""
    quiet_prefect(verbose)
    starting = begin_temporary_api()  # its start-up overlaps the imports below
    from flows.scoring import scoring_flow

    _warm(starting, "skops.io", "great_expectations")  # the model's loading, the input's contract
    with one_prefect_api(starting):
        state = scoring_flow(
            model=name,
            input_path=user_path(input, Path.cwd()),
            output_path=user_path(output, Path.cwd()),
            version=version,
            chunk_rows=chunk_rows,
            return_state=True,
        )
    result = flow_result(state)
    alias = f" ({result['alias']})" if result["alias"] else ""
    say(
        f"{result['model']} v{result['version']}{alias}: {result['rows']:,} rows scored in "
        f"{result['seconds']:.1f} s ({result['rows_per_second']:,.0f} rows/s) "
        f"-> {_shown(result['output'])}; "
        f"logged to {_shown(result['log'])}"
    )


def feedback(
    name: Annotated[str, typer.Argument(help="The model's name (its spec under pipelines/).")],
    labels: Annotated[str, typer.Option("--labels", "-l", help="True outcomes: the id and target columns.")],
    verbose: Verbose = False,
) -> None:
    """Record true outcomes by id (late, partial or repeated: the last label per id counts)."""
    quiet_prefect(verbose)
    starting = begin_temporary_api()
    from flows.scoring import feedback_flow

    with one_prefect_api(starting):
        state = feedback_flow(model=name, labels_path=user_path(labels, Path.cwd()), return_state=True)
    result = flow_result(state)
    skipped = f" ({result['skipped']} rows skipped: no id or no label)" if result["skipped"] else ""
    say(
        f"{result['model']}: {result['recorded']:,} labels recorded from "
        f"{_shown(result['labels_path'])}{skipped}; "
        f"{result['matched']:,} match logged predictions"
    )


def monitor(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    since_hours: Annotated[
        float | None, typer.Option("--since-hours", help="Predictions of the last N hours (default: all).")
    ] = None,
    window: Annotated[str, typer.Option(help="Window for performance over time (1D, 6h, ...).")] = "1D",
    verbose: Verbose = False,
) -> None:
    """Compare recent predictions with the champion's training profile; measure real performance."""
    quiet_prefect(verbose)
    starting = begin_temporary_api()
    from flows.monitoring import monitoring_flow

    with one_prefect_api(starting):
        state = monitoring_flow(model=name, since_hours=since_hours, window=window, return_state=True)
    result = flow_result(state)
    drifted = ", ".join(result["drifted_features"]) or "none"
    say(f"{result['model']} v{result['version']}: drifted features: {drifted}")
    if result["degraded"]:
        d = result["degraded"]
        say(f"performance degraded: {d['metric']} {d['value']:.4f} vs holdout {d['holdout']:.4f}")
    say(f"events: {', '.join(result['events']) or 'none'}; report: MLflow run {result['run_id']}")


def watch(verbose: Verbose = False) -> None:
    """Announce new data for every spec (conveyor.data.arrived), once per data digest."""
    quiet_prefect(verbose)
    starting = begin_temporary_api()
    from flows.watch import watch_flow

    with one_prefect_api(starting):
        state = watch_flow(return_state=True)
    for item in flow_result(state):
        say(f"{item['model']}: {item['status']}" + (f" ({item['reason']})" if "reason" in item else ""))


def register(app: typer.Typer) -> None:
    """Add `score`, `feedback`, `monitor` and `watch` to the `conveyor` command."""
    app.command()(score)
    app.command()(feedback)
    app.command()(monitor)
    app.command()(watch)
