"""What every `conveyor` command shares: quiet logs, one line per expected error, its exit code.

Exit codes: 0 promoted or kept (or success), 1 rejected by a quality floor, 2 bad spec or usage,
3 data refused (unreadable or breaking the contract), 4 registry refusal, 5 the stack cannot
start, stop or be reached, 70 unexpected error.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from app.stack.config import mask_passwords
from conveyor.errors import ConveyorError

T = TypeVar("T")
UNEXPECTED = 70
_EXPECTED_NAMES = ("ConveyorError", "SpecError", "DataError", "GateNotMet", "RegistryError")

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's and MLflow's logs.")]


class _DropExpectedTracebacks(logging.Filter):
    """Keep expected failures to one line on the terminal; the Prefect API still gets the details."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "conveyor_expected", False):  # the flow's own one-line account of it
            return False
        if record.exc_info and isinstance(record.exc_info[1], ConveyorError):
            return False
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        return not any(f"{name}:" in message or f"{name}(" in message for name in _EXPECTED_NAMES)


def quiet_prefect(verbose: bool) -> None:
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
    check_services()


def check_services(timeout: float = 3.0) -> None:
    """Fail in seconds with one line when the Prefect API or the tracking store set in the
    environment does not answer (their clients would retry for minutes)."""
    from prefect.settings import get_current_settings

    from conveyor import registry
    from conveyor.errors import UnreachableError
    from conveyor.settings import masked

    api = get_current_settings().api.url
    if api:
        import httpx

        try:
            httpx.get(f"{str(api).rstrip('/')}/health", timeout=timeout).raise_for_status()
        except httpx.HTTPError as exc:
            raise UnreachableError(
                f"the Prefect API {masked(str(api))} does not answer ({type(exc).__name__}); start it (make up) "
                "or unset PREFECT_API_URL to run on a temporary local one"
            ) from None
    registry.check_reachable(timeout)


def say(message: str, *, err: bool = False) -> None:
    """Print one line; a password inside a URL never reaches the terminal."""
    typer.echo(mask_passwords(message), err=err)


def exit_code_of(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, ConveyorError) else UNEXPECTED


def report_error(exc: ConveyorError) -> None:
    say(f"error: {exc}", err=True)


def run_or_exit(action: Callable[[], T]) -> T:
    """Run a command body: an expected error becomes one line on stderr and its exit code."""
    try:
        return action()
    except ConveyorError as exc:
        report_error(exc)
        raise typer.Exit(exc.exit_code) from None


def flow_result(state: Any) -> Any:
    """A flow's return value from its final state; an expected failure becomes one line and its exit code."""
    return run_or_exit(state.result)
