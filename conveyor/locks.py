"""Per-model locks that live where every runner can see them, and die with their holder.

- A PostgreSQL tracking store: a session advisory lock in that database (freed when the
  connection drops, so a killed holder frees it).
- A Prefect server (`PREFECT_API_URL` set): a Prefect global concurrency limit of 1 taken with
  a lease that the holder renews; the server's repossessor frees it when the holder dies.
- Otherwise (the embedded mode, one machine): an OS file lock under `.conveyor/locks`, freed by
  the kernel when the holding process dies.

Every lock is keyed by project and model, takes a timeout, and a timeout names the holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conveyor import settings
from conveyor.errors import BusyError

logger = logging.getLogger(__name__)

# Set by conveyor.temporary_api.one_prefect_api to the temporary server it started: that API dies
# with its command, so it holds no lock another command could see; the file lock does.
TEMPORARY_API = "CONVEYOR_TEMPORARY_PREFECT_API"

# Prefect refuses leases under 60 s; the holder renews it while alive.
LEASE_SECONDS = 60.0


def project_key() -> str:
    """A short stable digest of the project folder: two projects under one $HOME never share a lock."""
    return hashlib.sha256(str(settings.project_root()).encode()).hexdigest()[:8]


def lock_name(purpose: str, model: str) -> str:
    return f"{purpose}-{model}-{project_key()}"


def backend() -> str:
    """Which lock backend the current settings select: postgres, prefect or file."""
    if settings.tracking_uri().startswith("postgresql"):
        return "postgres"
    if prefect_server_url():
        return "prefect"
    return "file"


def prefect_server_url() -> str | None:
    """The Prefect API in use, or None for the embedded mode's temporary per-command server."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url and str(url) == os.environ.get(TEMPORARY_API):  # the command's own server (one_prefect_api)
        return None
    return str(url) if url else None


def _holder_file(folder: Path, name: str) -> Path:
    return folder / f"{name}.holder.json"


def describe_holder(name: str) -> str:
    """Who holds a file lock, as written by the holder (pid, host, since when, what)."""
    file = _holder_file(lock_dir(), name)
    try:
        holder = json.loads(file.read_text())
    except (OSError, ValueError):
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    what = f", {holder['what']}" if holder.get("what") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')} since {since}{what}"


def lock_dir() -> Path:
    folder = Path(os.environ.get("CONVEYOR_LOCK_DIR") or settings.state_dir() / "locks")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def model_lock(
    purpose: str,
    model: str,
    timeout: float,
    what: str = "",
    holder: Callable[[], str] | None = None,
) -> Iterator[str]:
    """Hold the `purpose` lock of `model` for the block; yields the backend used.

    `holder` describes the current holder for the timeout message (the file backend writes
    and reads its own holder record).
    """
    name = lock_name(purpose, model)
    kind = backend()
    if kind == "postgres":
        with _advisory_lock(name, timeout):
            yield kind
    elif kind == "prefect":
        with _prefect_lock(name, timeout, holder):
            yield kind
    else:
        with _file_lock(name, timeout, what):
            yield kind


@contextlib.contextmanager
def _file_lock(name: str, timeout: float, what: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    folder = lock_dir()
    lock = FileLock(str(folder / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for %s, held by %s", name, describe_holder(name))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise BusyError(
                f"gave up after {timeout:g} s waiting for the lock {name!r}, held by {describe_holder(name)}"
            ) from None
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what}
        _holder_file(folder, name).write_text(json.dumps(record))
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _prefect_lock(name: str, timeout: float, holder: Callable[[], str] | None) -> Iterator[None]:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)
        except Exception:  # created at the same moment by another runner: it exists now
            client.read_global_concurrency_limit_by_name(name)
    try:
        with concurrency(name, occupy=1, timeout_seconds=timeout, strict=True, lease_duration=LEASE_SECONDS):
            yield
    except TimeoutError:
        who = holder() if holder else "another run"
        raise BusyError(
            f"gave up after {timeout:g} s waiting for the Prefect concurrency limit {name!r}, held by {who}"
        ) from None


@contextlib.contextmanager
def _advisory_lock(name: str, timeout: float) -> Iterator[None]:
    import psycopg

    key = int.from_bytes(hashlib.sha256(f"conveyor:{name}".encode()).digest()[:8], "big", signed=True)
    dsn = settings.tracking_uri().replace("postgresql+psycopg2://", "postgresql://")
    dsn = dsn.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as connection:
        deadline = time.monotonic() + timeout
        while not connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() > deadline:
                holder = connection.execute(
                    "SELECT pid, backend_start FROM pg_locks JOIN pg_stat_activity USING (pid) "
                    "WHERE locktype = 'advisory' AND objid = (%s::bigint & 4294967295)::oid LIMIT 1",
                    (key,),
                ).fetchone()
                who = f"PostgreSQL backend {holder[0]} since {holder[1]:%H:%M:%S}" if holder else "another session"
                raise BusyError(f"gave up after {timeout:g} s waiting for the lock {name!r}, held by {who}")
            time.sleep(0.2)
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
