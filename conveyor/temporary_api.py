"""The embedded mode's temporary Prefect server, started without importing Prefect's server code.

Without `PREFECT_API_URL`, Prefect starts a temporary server per process through
`prefect.server.api.server.SubprocessASGIServer`. Importing that module in the command's own
process costs about 2.4 s here (the whole server application), only to launch a subprocess that
imports it again. This starts the same subprocess, with the same command line and environment,
from the client side: the command's process never imports the server.

The server dies with the command: it is stopped when its block ends, and at exit otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conveyor import locks
from conveyor.errors import UnreachableError
from conveyor.ports import free_port

# What Prefect's own launcher sets: no UI, and the server knows it is a temporary one.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
# On a database that exists, its block types are registered already (by its first start, or in the
# copy it began as). Prefect's check of that imports every installed collection first, prefect-dask
# and distributed here: about 0.7 CPU-s of a 4.6 CPU-s start (6 alternating pairs). Conveyor's flows
# use no block; a setting the user made wins.
REGISTERED_ENV = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false", "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}
STARTUP_FAILED = 3  # uvicorn's exit code when start-up fails, a port taken since it was chosen included
ATTEMPTS = 3


class TemporaryAPI:
    """One temporary Prefect server: `begin` starts its process, `wait` returns its API URL once it answers."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - the server's errors, kept for the message
        self._ready = False
        self._env: dict[str, str] = {}  # the server's environment, set by begin

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def begin(self, env: dict[str, str] | None = None, seed: bool = True) -> TemporaryAPI:
        """Start the server's process and return at once: its start-up overlaps the caller's work.

        `env` adds to the settings the server inherits. A database file that does not exist yet
        starts as a copy of the installed template (conveyor.prefect_database), unless `seed` is off.
        """
        from prefect.settings import get_current_settings

        from conveyor import prefect_database, sqlite_template

        extra = dict(env or {})
        settings = get_current_settings()
        setting = extra.get(prefect_database.DATABASE_URL) or settings.server.database.connection_url
        url = setting if isinstance(setting, str) or setting is None else setting.get_secret_value()
        if url is not None and seed:
            prefect_database.seed(url)
        registered = REGISTERED_ENV if url is not None and sqlite_template.exists(url) else {}
        self._env = {
            **os.environ,
            **SERVER_ENV,
            **registered,
            **settings.to_environment_variables(exclude_unset=True),
            **extra,
        }
        self._env.pop("PREFECT_API_URL", None)
        return self._launch()

    def _launch(self) -> TemporaryAPI:
        """The server's process on a free port (again, when the port was taken before it bound it)."""
        import prefect
        from prefect.logging import get_logger

        self.port = free_port()
        command = [
            *(sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent)),
            *("--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port)),
            *("--log-level", "error", "--lifespan", "on"),
        ]
        self.process = subprocess.Popen(command, env=self._env, stdout=subprocess.DEVNULL, stderr=self._stderr)
        get_logger("temporary_server").info("Starting temporary server on http://127.0.0.1:%s", self.port)
        atexit.register(self.stop)
        return self

    def wait(self, timeout: float | None = None) -> str:
        """The API URL once `/health` answers within `timeout` seconds (Prefect's start-up timeout
        setting by default); UnreachableError naming the cause when it never does."""
        if self._ready:
            return self.api_url
        import httpx
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        timeout = timeout or float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        deadline = time.monotonic() + timeout
        attempts = 1
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process is not None, "begin() first"
                code = self.process.poll()
                if code == STARTUP_FAILED and "address already in use" in self._errors() and attempts < ATTEMPTS:
                    attempts += 1
                    self._launch()
                    continue
                if code is not None:
                    raise UnreachableError(f"Prefect's temporary server exited with code {code}: {self._last_error()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        self._ready = True
                        return self.api_url
                time.sleep(0.1)
        self.stop()
        raise UnreachableError(
            f"Prefect's temporary server did not answer within {timeout:.0f} s; "
            "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or run `conveyor up`"
        )

    def stop(self) -> None:
        """Terminate the server (killed after 5 s); safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._ready = False
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)

    def _errors(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _last_error(self) -> str:
        """The last exception line of its output (the cause), else its last line."""
        lines = self._errors().strip().splitlines()
        causes = [line for line in lines if re.match(r"[\w.]+(Error|Exception): ", line)]
        return (causes or lines or ["no output"])[-1]


def begin_temporary_api() -> TemporaryAPI | None:
    """Start the embedded mode's temporary Prefect server now, or None when PREFECT_API_URL names one.

    Its seconds of start-up (its own process: imports, database) then overlap this process's
    imports; hand it to `one_prefect_api`, which waits for it before the first flow run.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    return TemporaryAPI().begin()


@contextlib.contextmanager
def one_prefect_api(started: TemporaryAPI | None = None) -> Iterator[str]:
    """Every flow run in the block talks to one Prefect API; started here once when none is set.

    Without `PREFECT_API_URL` each process would start its own temporary server (seconds each):
    a Dask worker process would start one per worker and record its runs there, out of sight. In
    the block one temporary server (`started`, or one started here) is named in the settings,
    which Prefect passes to the tasks it sends to Dask workers, and in the environment, which
    processes started in the block inherit; it stops when the block ends. Locks stay file locks
    (conveyor.locks knows this server). A temporary server listens on 127.0.0.1: workers on
    other machines need a real server (`conveyor up`) named by `PREFECT_API_URL`.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from conveyor.orchestration import no_heartbeats

    url = PREFECT_API_URL.value()
    if url:
        yield str(url)
        return
    server = started or TemporaryAPI().begin()
    try:
        api_url = server.wait()
        before = {key: os.environ.get(key) for key in ("PREFECT_API_URL", locks.TEMPORARY_API)}
        os.environ["PREFECT_API_URL"] = os.environ[locks.TEMPORARY_API] = api_url
        try:
            # No heartbeats: this server dies with the command, and each costs a run up to 1 s.
            with temporary_settings(updates={PREFECT_API_URL: api_url}), no_heartbeats():
                yield api_url
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        _drain_to_api()
        server.stop()


def _drain_to_api() -> None:
    """Send the logs and events still queued for the API (Prefect's own harness does this
    before stopping its server); otherwise they fail against a stopped server at exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)
