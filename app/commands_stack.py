"""`conveyor up | down | status | deploy`: the local stack and the deployments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from conveyor.errors import ConveyorError


def _run(action: Callable[[], Any]) -> Any:
    """Expected failures end with one line and their exit code, never a traceback."""
    try:
        return action()
    except ConveyorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def up(
    timeout: float = typer.Option(180, help="Seconds to wait for every service to be healthy."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Start the services only."),
) -> None:
    """Start the Prefect server, the MLflow server and a worker on 127.0.0.1, then deploy."""
    from conveyor import stack

    config = _run(stack.StackConfig.from_env)
    state, already = _run(
        lambda: stack.up(config, timeout=timeout, deploy=not no_deploy, echo=typer.echo)
    )
    typer.echo("the stack is already up" if already else f"the stack is up ({state.profile})")
    typer.echo(f"Prefect UI: {state.prefect_ui_url}")
    typer.echo(f"MLflow UI:  {state.mlflow_url}")
    typer.echo(f"logs:       {config.logs_dir}")
    typer.echo(f"to use it:  export PREFECT_API_URL={state.prefect_api_url} "
               f"MLFLOW_TRACKING_URI={state.mlflow_url}")  # fmt: skip


def down(
    timeout: float = typer.Option(20, help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop exactly the processes `conveyor up` started (by process id)."""
    from conveyor import stack

    config = _run(stack.StackConfig.from_env)
    stopped = _run(lambda: stack.down(config, timeout=timeout))
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "the stack is not running")


def status() -> None:
    """Show what runs: each service's pid, health and memory. Exit 1 unless all are healthy."""
    from conveyor import stack

    config = _run(stack.StackConfig.from_env)
    state, rows = _run(lambda: stack.status(config))
    if state is None:
        typer.echo("the stack is not running (no .conveyor/stack.json)")
        raise typer.Exit(1)
    typer.echo(f"profile {state.profile}, root {state.root}")
    for row in rows:
        condition = (
            "healthy" if row.healthy else ("running, not healthy" if row.running else "dead")
        )
        memory = f"{row.rss_bytes / 2**20:7.0f} MB" if row.running else " " * 10
        typer.echo(f"{row.name:15} pid {row.pid:<8} {condition:21} {memory}  {row.detail}")
    if not rows or not all(row.healthy for row in rows):
        raise typer.Exit(1)


def deploy(
    specs_only: bool = typer.Option(
        False, "--specs-only", help="Skip `prefect deploy --all`; only sync the per-spec ones."
    ),
) -> None:
    """Deploy prefect.yaml, then one scheduled `train-<name>` deployment per pipeline spec."""
    from conveyor import stack

    config = _run(stack.StackConfig.from_env)
    report = _run(lambda: stack.deploy(config, specs_only=specs_only))
    for line in report.lines():
        typer.echo(line, err=line.startswith("error"))
    if report.errors:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the stack commands to the main `conveyor` app."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("deploy")(deploy)


def main() -> None:
    """Run the stack commands alone (`python -m conveyor.cli_stack`)."""
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
