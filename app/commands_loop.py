"""`conveyor score` and `conveyor feedback`: batch predictions and late ground truth."""

from __future__ import annotations

from typing import Annotated

import typer

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and MLflow's logs.")]


def _shown(path: str) -> str:
    from tasks.data import display_path

    return display_path(path)


def score(
    name: Annotated[str, typer.Argument(help="The model's name (its spec under pipelines/).")],
    input: Annotated[str, typer.Option("--input", "-i", help="Rows to score: .csv or .parquet.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write them: .csv or .parquet.")],
    version: Annotated[str | None, typer.Option(help="Score with this version instead of the champion.")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk (bounds the memory).")] = 250_000,
    verbose: Verbose = False,
) -> None:
    """Score a file with the champion (or --version), streamed; every row is logged."""
    from conveyor.cli import _flow_result, _quiet_prefect

    _quiet_prefect(verbose)
    from flows.scoring import scoring_flow

    state = scoring_flow(
        model=name,
        input_path=input,
        output_path=output,
        version=version,
        chunk_rows=chunk_rows,
        return_state=True,
    )
    result = _flow_result(state)
    alias = f" ({result['alias']})" if result["alias"] else ""
    typer.echo(
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
    from conveyor.cli import _flow_result, _quiet_prefect

    _quiet_prefect(verbose)
    from flows.scoring import feedback_flow

    result = _flow_result(feedback_flow(model=name, labels_path=labels, return_state=True))
    skipped = f" ({result['skipped']} rows skipped: no id or no label)" if result["skipped"] else ""
    typer.echo(
        f"{result['model']}: {result['recorded']:,} labels recorded from "
        f"{_shown(result['labels_path'])}{skipped}; "
        f"{result['matched']:,} match logged predictions"
    )


def register(app: typer.Typer) -> None:
    """Add `score` and `feedback` to the `conveyor` command."""
    app.command()(score)
    app.command()(feedback)
