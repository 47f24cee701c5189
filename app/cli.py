"""The `conveyor` command: one subcommand per stage of a model's life, and the local stack.

This is the root only: each `commands_*` module registers its subcommands here and never imports
this module back. Exit codes are listed in `app.console`.
"""

from __future__ import annotations

import sys

import typer

from app import commands_fleet, commands_governance, commands_loop, commands_models, commands_serve, commands_stack
from app.console import UNEXPECTED, report_error
from conveyor.errors import ConveyorError
from conveyor.process_exit import exit_quickly

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Conveyor: declarative ML pipelines on Prefect and MLflow.",
)
commands_models.register(app)
commands_fleet.register(app)
commands_loop.register(app)
commands_stack.register(app)
commands_serve.register(app)
commands_governance.register(app)


def main() -> None:
    """Console entry point: unexpected errors keep their traceback and exit 70."""
    exit_quickly()
    try:
        app()
    except SystemExit:
        raise
    except ConveyorError as exc:  # raised before a command's own handler (a service that is down)
        report_error(exc)
        sys.exit(exc.exit_code)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.exit(UNEXPECTED)


if __name__ == "__main__":
    main()
