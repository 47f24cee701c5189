"""`conveyor train | show | contract init`: a model's training, its versions, its data contract."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from app.console import Verbose, exit_code_of, quiet_prefect, report_error, run_or_exit, say
from conveyor.errors import ConveyorError
from conveyor.settings import user_path


def train(
    specs: Annotated[list[str], typer.Argument(help="Spec files or model names under pipelines/.")],
    data: Annotated[str | None, typer.Option(help="Train on this file or glob instead of data.path.")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Register, never move champion.")] = False,
    parallel: Annotated[
        int | None, typer.Option(help="Several specs: train at most N at once (default CONVEYOR_WORKERS or the cores).")
    ] = None,
    dask: Annotated[
        bool, typer.Option("--dask", help="Several specs: run them on a Dask LocalCluster (or CONVEYOR_DASK_ADDRESS).")
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Validate, train, evaluate, register and (when it earns it) promote each spec's model.

    Several specs train concurrently under one parent flow run; one failure never stops the others.
    """
    quiet_prefect(verbose)
    if len(specs) > 1:
        from app.commands_fleet import train_specs

        data_path = None if data is None else user_path(data, Path.cwd())
        raise typer.Exit(train_specs(specs, data_path, not no_promote, parallel, dask or None))
    from conveyor.spec import find_spec
    from conveyor.temporary_api import begin_temporary_api, one_prefect_api

    run_or_exit(lambda: find_spec(specs[0]))  # a spec that does not load is refused now, before any server starts
    starting = begin_temporary_api()  # its start-up overlaps the imports and the store's opening below
    from flows.training import training_flow

    _open_local_store()
    with one_prefect_api(starting):
        raise typer.Exit(_train_one(training_flow, specs[0], data, no_promote))


def _train_one(training_flow: Any, spec: str, data: str | None, no_promote: bool) -> int:
    """One spec's training flow run, its line printed; its exit code."""
    # A path typed here is the working directory's; the flow resolves relative ones from the project root.
    data_path = None if data is None else user_path(data, Path.cwd())
    state: Any = training_flow(spec=spec, data_path=data_path, allow_promotion=not no_promote, return_state=True)
    try:
        # The flow returns a Completed state carrying the outcome; the run's final state is
        # that state, and its result is the outcome dict.
        result = cast("dict[str, Any]", state.result())
    except BaseException as exc:  # the flow's own exception, re-raised from its final state
        if not isinstance(exc, ConveyorError):
            raise
        report_error(exc)
        return exit_code_of(exc)
    if result.get("reused") or result.get("version") is None:  # nothing trained: the run's one line says why
        say(f"{result['model']}: {result.get('message') or result['reason']}")
        return 0
    champion = result["champion"] or "none"
    value = result["value"]
    shown = "n/a" if value is None else f"{value:.4f}"
    say(
        f"{result['model']} v{result['version']}: {result['outcome']} "
        f"({result['metric']} {shown}; champion v{champion}). {result['reason']}"
    )
    return 0


def _open_local_store() -> None:
    """Open the embedded SQLite MLflow store (imports, tables created on first use) now, while the
    temporary Prefect server starts; every run reaches it. Errors are left to the flow to report."""
    from conveyor import settings

    if not settings.tracking_uri().startswith("sqlite:") or not settings.pipelines_dir().is_dir():
        return  # a server's store, or not in a project (the flow says so; nothing is created here)
    with contextlib.suppress(Exception):
        from conveyor import registry

        registry.client().search_experiments(max_results=1)


def show(name: Annotated[str, typer.Argument(help="The model's name (its spec's name).")]) -> None:
    """Print the champion and every version with its decision."""
    from conveyor import registry

    def body() -> None:
        registry.check_reachable()
        versions = registry.list_versions(name)
        if not versions:
            raise ConveyorError(f"no registered model named {name!r} in {registry.client().tracking_uri}")
        champion = registry.alias_version(name, registry.CHAMPION)
        say(f"{name}: champion v{champion.version if champion else 'none'}")
        moved = registry.unaudited_champion(name)
        if moved:
            say(f"warning: {moved}", err=True)
        aliases: dict[str, list[str]] = {}
        for alias in (registry.CHAMPION, registry.CHALLENGER):
            found = registry.alias_version(name, alias)
            if found is not None:
                aliases.setdefault(str(found.version), []).append(alias)
        if champion is not None and champion.tags.get("conveyor.kind") == "segment-router":
            _show_segments(name, str(champion.version), champion.tags.get("conveyor.task", "binary"))
        say(f"{'version':>7}  {'decision':<9} {'aliases':<19} {'data':<12} reason")
        for version in versions:
            tags = version.tags
            say(
                f"{version.version:>7}  {tags.get('conveyor.decision', '-'):<9} "
                f"{','.join(aliases.get(str(version.version), [])) or '-':<19} "
                f"{tags.get('conveyor.data_digest', '')[:10]:<12} {tags.get('conveyor.decision_reason', '')}"
            )

    run_or_exit(body)


def _show_segments(name: str, version: str, task: str) -> None:
    """The segments a router version serves: champion version, metric, last decision, age."""
    from conveyor.spec import DEFAULT_METRIC
    from tasks.segments import load_routes, segment_table

    routes = load_routes(name, version)
    spec_metric = None
    try:
        from conveyor.spec import find_spec

        spec_metric = find_spec(name).evaluation.metric
    except ConveyorError:  # the spec is not here: the task's default metric
        pass
    rows = segment_table(name, routes, spec_metric or DEFAULT_METRIC[task])
    say(f"segments: {len(routes['segments'])} (by {', '.join(routes['by'])}); others go to the all-rows model")
    width = max(len(row["segment"]) for row in rows)
    say(f"{'segment':<{width}}  {'champion':>8}  {'metric':<16} {'last decision':<15} {'age':>5}  note")
    for row in rows:
        say(
            f"{row['segment']:<{width}}  {'v' + row['version']:>8}  {row['metric']:<16} {row['decision']:<15} "
            f"{row['age']:>5}  {row['note']}"
        )
    say("")


contract_app = typer.Typer(no_args_is_help=True, help="Draft and check data contracts.")


@contract_app.command("init")
def contract_init(
    spec: Annotated[str, typer.Argument(help="Spec file or model name under pipelines/.")],
    force: Annotated[bool, typer.Option("--force", help="Draft again over an existing contract.")] = False,
) -> None:
    """Draft pipelines/<name>.expectations.json from the spec's current data, for review."""
    from tasks.contracts import init_contract

    path = run_or_exit(lambda: init_contract(spec, force=force))
    say(f"drafted {path}: review it, commit it, and edit it to change the contract")


def register(app: typer.Typer) -> None:
    """Add `train`, `show` and `contract` to the `conveyor` command."""
    app.command()(train)
    app.command()(show)
    app.add_typer(contract_app, name="contract")
