"""`conveyor fleet` and `conveyor train` of several specs: many models at once, one view of them all."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from app.console import exit_code_of, quiet_prefect, run_or_exit, say
from conveyor.errors import ConveyorError


def train_specs(
    specs: list[str], data_path: str | None, allow_promotion: bool, parallel: int | None, dask: bool | None
) -> int:
    """Train several specs under one parent flow run; print one row per model; the worst exit code."""
    from conveyor.temporary_api import one_prefect_api
    from flows.fleet import train_many

    try:
        with one_prefect_api():  # one temporary server for the command, reached by every child run
            outcomes = train_many(specs, data_path, allow_promotion, max_parallel=parallel, dask=dask)
    except ConveyorError as exc:
        say(f"error: {exc}", err=True)
        return exit_code_of(exc)
    print_outcomes(outcomes)
    return max((int(o["exit_code"]) for o in outcomes), default=0)


def print_outcomes(outcomes: list[dict[str, Any]]) -> None:
    """A table, one line per model with failures first; then one `error:` line per failure on
    stderr, in the order the specs were given (as a single spec's run says it)."""
    ordered = sorted(outcomes, key=lambda o: (o["status"] != "failed", o["model"]))
    width = max([5, *(len(o["model"]) for o in ordered)])
    say(f"{'model':<{width}}  {'outcome':<9} detail")
    for outcome in ordered:
        say(f"{outcome['model']:<{width}}  {outcome['status']:<9} {' '.join(outcome['detail'].split())}")
    failed = [o for o in outcomes if o["status"] == "failed"]
    say(f"{len(outcomes)} model(s): {len(outcomes) - len(failed)} done, {len(failed)} failed")
    for outcome in failed:
        say(f"error: {outcome['detail']}", err=True)


def fleet(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Prefect's logs too.")] = False) -> None:
    """Every model: champion and age, last decision and why, new data, monitoring, failures, approvals."""
    quiet_prefect(verbose)
    from conveyor import registry
    from tasks.fleet import read_fleet, render_text

    def body() -> list[str]:
        registry.check_reachable()
        rows = read_fleet()
        needs = sum(bool(row.attention) for row in rows)
        return [*render_text(rows), f"{len(rows)} model(s), {needs} need a person"]

    for line in run_or_exit(body):
        say(line)


def register(app: typer.Typer) -> None:
    """Add `fleet` to the `conveyor` command."""
    app.command()(fleet)
