"""Expected failures: each ends a command with one line and a documented exit code."""

from __future__ import annotations


class ConveyorError(Exception):
    """A failure the user can act on: printed as one line, never with a traceback."""

    exit_code = 2


class SpecError(ConveyorError):
    """The pipeline spec is malformed or refers to something that does not exist."""

    exit_code = 2


class DataError(ConveyorError):
    """The data cannot be read, or it breaks the data contract."""

    exit_code = 3

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


class GateNotMet(ConveyorError):
    """The candidate model did not pass a quality floor: it was registered but not promoted."""

    exit_code = 1


class RegistryError(ConveyorError):
    """The registry refused an operation (unknown model, version or alias)."""

    exit_code = 4


class UnreachableError(ConveyorError):
    """A service Conveyor needs (the tracking server, the Prefect API, PostgreSQL) does not answer."""

    exit_code = 6


class BusyError(ConveyorError):
    """Another run holds the model's lock and did not let go within the timeout."""

    exit_code = 7


def retry_unless_expected(task: object, task_run: object, state: object) -> bool:
    """Prefect retry condition: retry I/O hiccups, never an expected failure (retrying can't fix it)."""
    try:
        state.result()  # type: ignore[attr-defined]
    except ConveyorError:
        return False
    except Exception:
        return True
    return True
