"""The `conveyor` command: one subcommand per stage of a model's life.

Exit codes: 0 promoted or kept (or success), 1 rejected by a quality floor, 2 bad spec or usage,
3 data refused (unreadable or breaking the contract), 4 registry refusal, 70 unexpected error.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from conveyor.errors import ConveyorError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Conveyor: declarative ML pipelines on Prefect and MLflow.",
)

T = TypeVar("T")
UNEXPECTED = 70


_EXPECTED_NAMES = ("ConveyorError", "SpecError", "DataError", "GateNotMet", "RegistryError")


class _DropExpectedTracebacks(logging.Filter):
    """Keep expected failures to one line on the terminal; the Prefect API still gets the details."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConveyorError):
            return False
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not any(f"{name}:" in message or f"{name}(" in message for name in _EXPECTED_NAMES)


def _quiet_prefect(verbose: bool) -> None:
    """Prefect logs to the terminal at WARNING unless --verbose; expected errors never repeat there."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    from prefect.logging.configuration import setup_logging

    setup_logging()
    for logger in (logging.getLogger("prefect"), logging.getLogger()):
        for handler in logger.handlers:
            if type(handler).__name__ == "PrefectConsoleHandler":
                handler.setLevel(logging.INFO if verbose else logging.WARNING)
                handler.addFilter(_DropExpectedTracebacks())
    for name in ("mlflow", "alembic", "great_expectations"):
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)


def _run(action: Callable[[], T]) -> T:
    """Run a command body: an expected error becomes one line on stderr and its exit code."""
    try:
        return action()
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _exit_code_of(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, ConveyorError) else UNEXPECTED


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and MLflow's logs.")]


@app.command()
def train(
    specs: Annotated[list[str], typer.Argument(help="Spec files or model names under pipelines/.")],
    data: Annotated[str | None, typer.Option(help="Train on this file or glob instead of data.path.")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Register, never move champion.")] = False,
    verbose: Verbose = False,
) -> None:
    """Validate, train, evaluate, register and (when it earns it) promote each spec's model."""
    _quiet_prefect(verbose)
    from flows.training import training_flow

    worst = 0
    for spec in specs:
        state = training_flow(spec=spec, data_path=data, allow_promotion=not no_promote, return_state=True)
        try:
            result: dict[str, Any] = state.result()
        except BaseException as exc:  # the flow's own exception, re-raised from its final state
            if not isinstance(exc, ConveyorError):
                raise
            typer.echo(f"error: {exc}", err=True)
            worst = max(worst, _exit_code_of(exc))
            continue
        champion = result["champion"] or "none"
        value = result["value"]
        shown = "n/a" if value is None else f"{value:.4f}"
        typer.echo(
            f"{result['model']} v{result['version']}: {result['outcome']} "
            f"({result['metric']} {shown}; champion v{champion}). {result['reason']}"
        )
    raise typer.Exit(worst)


@app.command()
def show(name: Annotated[str, typer.Argument(help="The model's name (its spec's name).")]) -> None:
    """Print the champion and every version with its decision."""
    from conveyor import registry

    def body() -> None:
        versions = registry.list_versions(name)
        if not versions:
            raise ConveyorError(f"no registered model named {name!r} in {registry.client().tracking_uri}")
        champion = registry.alias_version(name, registry.CHAMPION)
        typer.echo(f"{name}: champion v{champion.version if champion else 'none'}")
        aliases: dict[str, list[str]] = {}
        for alias in (registry.CHAMPION, registry.CHALLENGER):
            found = registry.alias_version(name, alias)
            if found is not None:
                aliases.setdefault(str(found.version), []).append(alias)
        typer.echo(f"{'version':>7}  {'decision':<9} {'aliases':<19} {'data':<12} reason")
        for version in versions:
            tags = version.tags
            typer.echo(
                f"{version.version:>7}  {tags.get('conveyor.decision', '-'):<9} "
                f"{','.join(aliases.get(str(version.version), [])) or '-':<19} "
                f"{tags.get('conveyor.data_digest', '')[:10]:<12} {tags.get('conveyor.decision_reason', '')}"
            )

    _run(body)


def _flow_result(state: Any) -> Any:
    """The flow's return value; an expected failure becomes one line and its exit code."""
    try:
        return state.result()
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def monitor(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    since_hours: Annotated[
        float | None, typer.Option("--since-hours", help="Predictions of the last N hours (default: all).")
    ] = None,
    window: Annotated[str, typer.Option(help="Window for performance over time (1D, 6h, ...).")] = "1D",
    verbose: Verbose = False,
) -> None:
    """Compare recent predictions with the champion's training profile; measure real performance."""
    _quiet_prefect(verbose)
    from flows.monitoring import monitoring_flow

    result = _flow_result(monitoring_flow(model=name, since_hours=since_hours, window=window, return_state=True))
    drifted = ", ".join(result["drifted_features"]) or "none"
    typer.echo(f"{result['model']} v{result['version']}: drifted features: {drifted}")
    if result["degraded"]:
        d = result["degraded"]
        typer.echo(f"performance degraded: {d['metric']} {d['value']:.4f} vs holdout {d['holdout']:.4f}")
    typer.echo(f"events: {', '.join(result['events']) or 'none'}; report: MLflow run {result['run_id']}")


@app.command()
def watch(verbose: Verbose = False) -> None:
    """Announce new data for every spec (conveyor.data.arrived), once per data digest."""
    _quiet_prefect(verbose)
    from flows.watch import watch_flow

    for item in _flow_result(watch_flow(return_state=True)):
        typer.echo(f"{item['model']}: {item['status']}" + (f" ({item['reason']})" if "reason" in item else ""))


contract_app = typer.Typer(no_args_is_help=True, help="Draft and check data contracts.")
app.add_typer(contract_app, name="contract")


@contract_app.command("init")
def contract_init(
    spec: Annotated[str, typer.Argument(help="Spec file or model name under pipelines/.")],
    force: Annotated[bool, typer.Option("--force", help="Draft again over an existing contract.")] = False,
) -> None:
    """Draft pipelines/<name>.expectations.json from the spec's current data, for review."""
    from tasks.contracts import init_contract

    path = _run(lambda: init_contract(spec, force=force))
    typer.echo(f"drafted {path}: review it, commit it, and edit it to change the contract")


def _register_extensions() -> None:
    """Commands that live beside their subsystem: the stack, and scoring with feedback."""
    from conveyor import cli_loop, cli_stack

    cli_stack.register(app)
    cli_loop.register(app)


_register_extensions()


def main() -> None:
    """Console entry point: unexpected errors keep their traceback and exit 70."""
    try:
        app()
    except SystemExit:
        raise
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.exit(UNEXPECTED)
