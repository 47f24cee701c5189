"""`conveyor up | down | status | deploy`: the local stack and the deployments."""

from __future__ import annotations

import typer

from app.console import run_or_exit, say


def up(
    timeout: float = typer.Option(180, help="Seconds to wait for every service to be healthy."),
    no_deploy: bool = typer.Option(False, "--no-deploy", help="Start the services only."),
) -> None:
    """Start the Prefect server, the MLflow server and a worker on 127.0.0.1, then deploy."""
    from app.stack.config import MLFLOW_CLASSIC_VIEW, StackConfig
    from app.stack.startup import up as start

    config = run_or_exit(StackConfig.from_env)
    state, already = run_or_exit(lambda: start(config, timeout=timeout, deploy=not no_deploy, echo=say))
    profile = f"{state.profile}, auth" if state.auth else state.profile
    say("the stack is already up" if already else f"the stack is up ({profile})")
    say(f"Prefect UI: {state.prefect_ui_url}")
    say(f"MLflow UI:  {state.mlflow_url}{MLFLOW_CLASSIC_VIEW}")
    say(f"logs:       {config.logs_dir}")
    if served := state.services.get("serving"):
        say(f"Models:     {served.url}/models/<name>/invocations (GET {served.url}/models lists them)")
    if state.dask_address:
        say(f"Dask:       {state.dask_address}, dashboard {state.dask_dashboard_url}")
    if state.s3_endpoint_url:
        say(f"S3:         {state.s3_endpoint_url}, bucket conveyor (MLflow's artifacts); source {config.s3_env_file}")
    if state.auth:
        # Never the secrets themselves: they are in files only the owner can read.
        say(f"to use it:  source {config.auth_env_file}  (the addresses and credentials, readable by you only)")
        say(f"logins:     MLflow user admin, Prefect auth string: both in {config.auth_file}")
    else:
        say(f"to use it:  export PREFECT_API_URL={state.prefect_api_url} MLFLOW_TRACKING_URI={state.mlflow_url}")


def down(
    timeout: float = typer.Option(20, help="Seconds to wait after SIGTERM before SIGKILL."),
) -> None:
    """Stop exactly the processes `conveyor up` started (by process id)."""
    from app.stack.config import StackConfig
    from app.stack.startup import down as stop

    config = run_or_exit(StackConfig.from_env)
    stopped = run_or_exit(lambda: stop(config, timeout=timeout))
    say(f"stopped {', '.join(stopped)}" if stopped else "the stack is not running")


def status() -> None:
    """Show what runs: each service's pid, health and memory. Exit 1 unless all are healthy."""
    from app.stack.config import StackConfig
    from app.stack.startup import status as inspect

    config = run_or_exit(StackConfig.from_env)
    state, rows = run_or_exit(lambda: inspect(config))
    if state is None:
        say("the stack is not running (no .conveyor/stack.json)")
        raise typer.Exit(1)
    say(f"profile {state.profile}, root {state.root}")
    for row in rows:
        condition = "healthy" if row.healthy else ("running, not healthy" if row.running else "dead")
        memory = f"{row.rss_bytes / 2**20:7.0f} MB" if row.running else " " * 10
        say(f"{row.name:15} pid {row.pid:<8} {condition:21} {memory}  {row.detail}")
    if not rows or not all(row.healthy for row in rows):
        raise typer.Exit(1)


def deploy(
    specs_only: bool = typer.Option(
        False, "--specs-only", help="Skip `prefect deploy --all`; only sync the per-spec ones."
    ),
) -> None:
    """Deploy prefect.yaml, then one scheduled `train-<name>` deployment per pipeline spec."""
    from app.stack.config import StackConfig
    from app.stack.deploy import deploy as deploy_all

    config = run_or_exit(StackConfig.from_env)
    report = run_or_exit(lambda: deploy_all(config, specs_only=specs_only))
    for line in report.lines():
        say(line, err=line.startswith("error"))
    if report.errors:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the stack commands to the `conveyor` command."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("deploy")(deploy)


def main() -> None:
    """Run the stack commands alone (`python -m app.commands_stack`), without the flows' commands."""
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
