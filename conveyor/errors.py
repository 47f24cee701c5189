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


class StorageError(ConveyorError):
    """The disk under the stores is full or read-only: nothing was registered, the run ended FAILED."""

    exit_code = 8


_DISK_FULL = ("database or disk is full", "no space left on device")
_READ_ONLY = ("attempt to write a readonly database", "read-only file system")


def storage_error(exc: BaseException) -> StorageError | None:
    """The storage failure behind `exc` (a full or read-only disk, however deeply wrapped), in one line."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).lower()
        code = getattr(current, "errno", None)
        where = getattr(current, "filename2", None) or getattr(current, "filename", None)
        place = f"{where}: " if where else ""
        if code in (errno.ENOSPC, errno.EDQUOT) or any(marker in text for marker in _DISK_FULL):
            return StorageError(f"{place}no space left on the disk that holds the stores; free some and run again")
        if code == errno.EROFS or any(marker in text for marker in _READ_ONLY):
            return StorageError(f"{place}the stores are on a read-only file system; make it writable and run again")
        current = current.__cause__ or current.__context__
    return None


def retry_unless_expected(task: object, task_run: object, state: object) -> bool:
    """Prefect retry condition: retry I/O hiccups, never an expected failure (retrying can't fix it)."""
    try:
        state.result()  # type: ignore[attr-defined]
    except ConveyorError:
        return False
    except Exception as exc:
        return storage_error(exc) is None  # a full or read-only disk stays so for the next 7 s
    return True
