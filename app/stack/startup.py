"""The local stack: a Prefect server, an MLflow server and a worker, started and stopped by pid.

`up` writes what it started to `.conveyor/stack.json` (pids, their kernel start times, ports) so
that `down` stops exactly those process trees and nothing that merely shares a name or a port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conveyor import settings
from conveyor.errors import ConveyorError

log = logging.getLogger(__name__)

POOL = "conveyor"
WORKER_NAME = "conveyor-worker"
HOST = "127.0.0.1"
SERVICES = ("prefect-server", "mlflow-server", "worker")


class StackError(ConveyorError):
    """The stack cannot start, stop or be reached; the message names the service and its log."""

    exit_code = 5


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which ports and databases it uses."""

    root: Path
    prefect_port: int = 4200
    mlflow_port: int = 5000
    database_url: str | None = None
    database_prefix: str = "conveyor"

    @classmethod
    def from_env(cls, root: Path | None = None) -> StackConfig:
        """Read CONVEYOR_PREFECT_PORT, CONVEYOR_MLFLOW_PORT, CONVEYOR_DATABASE_URL/_PREFIX."""
        prefix = os.environ.get("CONVEYOR_DATABASE_PREFIX", "conveyor")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", prefix):
            raise StackError(
                f"CONVEYOR_DATABASE_PREFIX={prefix!r}: use lower-case letters, digits and _"
            )
        return cls(
            root=(root or settings.project_root()).resolve(),
            prefect_port=_port_from_env("CONVEYOR_PREFECT_PORT", 4200),
            mlflow_port=_port_from_env("CONVEYOR_MLFLOW_PORT", 5000),
            database_url=os.environ.get("CONVEYOR_DATABASE_URL") or None,
            database_prefix=prefix,
        )

    @property
    def state_dir(self) -> Path:
        return self.root / ".conveyor"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_ui_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def profile(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    @property
    def database_names(self) -> tuple[str, str]:
        """(Prefect database, MLflow database) on the PostgreSQL profile."""
        return f"{self.database_prefix}_prefect", f"{self.database_prefix}_mlflow"

    def prefect_database_url(self, *, hide_password: bool = False) -> str:
        if not self.database_url:
            return f"sqlite+aiosqlite:///{self.prefect_home / 'prefect.db'}"
        url = _pg_url(self.database_url).set(
            drivername="postgresql+asyncpg", database=self.database_names[0]
        )
        return url.render_as_string(hide_password=hide_password)

    def mlflow_backend_uri(self, *, hide_password: bool = False) -> str:
        """The same SQLite file the embedded default uses, or the MLflow PostgreSQL database."""
        if not self.database_url:
            return f"sqlite:///{self.state_dir / 'mlflow.db'}"
        url = _pg_url(self.database_url).set(
            drivername="postgresql", database=self.database_names[1]
        )
        return url.render_as_string(hide_password=hide_password)


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StackError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


def _pg_url(raw: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError:
        raise StackError(f"CONVEYOR_DATABASE_URL is not a database URL: {raw!r}") from None
    if url.get_backend_name() != "postgresql":
        raise StackError(
            f"CONVEYOR_DATABASE_URL must be postgresql://user@host:port, got {url.drivername}"
        )
    return url


# --------------------------------------------------------------------------- PostgreSQL


def _admin_conninfo(base_url: str) -> str:
    url = _pg_url(base_url)
    return url.set(drivername="postgresql", database=url.database or "postgres").render_as_string(
        hide_password=False
    )


def ensure_databases(base_url: str, names: Iterable[str]) -> list[str]:
    """Create the named databases if missing; return the ones created now."""
    import psycopg
    from psycopg import sql

    created = []
    try:
        with psycopg.connect(
            _admin_conninfo(base_url), autocommit=True, connect_timeout=10
        ) as conn:
            for name in names:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    continue
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created.append(name)
                except psycopg.errors.DuplicateDatabase:
                    pass  # another `up` created it between our check and our CREATE
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StackError(
            f"CONVEYOR_DATABASE_URL: cannot connect to PostgreSQL: {first_line}"
        ) from None
    return created


def drop_databases(base_url: str, names: Iterable[str]) -> None:
    """Drop the named databases, closing their connections first."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(_admin_conninfo(base_url), autocommit=True, connect_timeout=10) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _mlflow_heads() -> set[str]:
    """The head revisions of the installed MLflow's migrations, read from its alembic files.

    Parsed rather than imported: alembic's ScriptDirectory imports every revision (seconds).
    """
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return set()
    versions = Path(spec.submodule_search_locations[0]) / "store" / "db_migrations" / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    for file in versions.glob("*.py"):
        text = file.read_text(encoding="utf-8")
        if revision := re.search(r"^revision\s*=\s*[\"']([0-9a-f]+)[\"']", text, re.M):
            revisions.add(revision.group(1))
        if down := re.search(r"^down_revision\s*=\s*(.+)$", text, re.M):
            parents.update(re.findall(r"[\"']([0-9a-f]+)[\"']", down.group(1)))
    return revisions - parents


def mlflow_schema_current(config: StackConfig) -> bool:
    """Whether the MLflow database is at the installed MLflow's schema (no upgrade needed)."""
    import psycopg

    heads = _mlflow_heads()
    if not heads or not config.database_url:
        return False
    url = _pg_url(config.database_url).set(
        drivername="postgresql", database=config.database_names[1]
    )
    try:
        with psycopg.connect(url.render_as_string(hide_password=False), connect_timeout=10) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except psycopg.Error:
        return False  # no tables yet, or unreadable: let `mlflow db upgrade` decide
    return {row[0] for row in rows} == heads


# --------------------------------------------------------------------------- processes


@dataclass
class Service:
    """One process tree the stack started."""

    name: str
    pid: int
    start_ticks: int
    log: str
    cmd: list[str]
    port: int | None = None
    url: str | None = None


@dataclass
class StackState:
    """What `.conveyor/stack.json` holds."""

    root: str
    profile: str
    prefect_ui_url: str
    prefect_api_url: str
    mlflow_url: str
    started_at: float
    services: dict[str, Service] = field(default_factory=dict)
    ready: bool = False
    databases: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds from start to each ready

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> StackState | None:
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            services = {name: Service(**svc) for name, svc in raw.pop("services").items()}
            return cls(**raw, services=services)
        except (ValueError, TypeError, KeyError) as exc:
            raise StackError(f"{path}: unreadable stack state ({exc}); remove it by hand") from None


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, start time in clock ticks) of a process, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def is_alive(service: Service) -> bool:
    """The recorded process still runs: same pid *and* same start time (pids get reused)."""
    stat = _stat(service.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[3] == service.start_ticks


def process_tree(pid: int) -> list[int]:
    """The pid and all its live descendants, whatever session or group they moved to."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_bytes(pids: Iterable[int]) -> int:
    """Sum of resident set sizes (VmRSS) of the given processes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def port_is_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (connections lingering in TIME-WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves do: only a live listener should make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _bin(name: str) -> str:
    """A console script of this environment (the venv running Conveyor), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` is not installed in {Path(sys.executable).parent}")
    return found


def _spawn(name: str, cmd: list[str], env: dict[str, str], config: StackConfig) -> Service:
    log_path = config.logs_dir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=config.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: `down` signals the whole group
        )
    stat = _stat(proc.pid)
    return Service(
        name=name, pid=proc.pid, start_ticks=stat[3] if stat else 0, log=str(log_path), cmd=cmd
    )


def _log_tail(path: str | Path, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child (tests call `up` in-process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _terminate(services: Iterable[Service], timeout: float) -> list[str]:
    """SIGTERM every live recorded tree, wait, then SIGKILL what is left; return survivors."""
    targets: dict[int, Service] = {}
    for service in services:
        if not is_alive(service):
            continue
        for pid in process_tree(service.pid):
            targets[pid] = service
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):  # descendants that left the group
            os.kill(pid, signal.SIGTERM)

    def alive(pid: int) -> bool:
        _reap(pid)
        stat = _stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in targets):
        time.sleep(0.1)
    for pid in [pid for pid in targets if alive(pid)]:
        log.warning("pid %d (%s) ignored SIGTERM; sending SIGKILL", pid, targets[pid].name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    return sorted({targets[pid].name for pid in targets if alive(pid)})


# --------------------------------------------------------------------------- environments


def _base_env(config: StackConfig) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # inherited pointers at some other server would leak into the stack's processes
        if not key.startswith(("PREFECT_", "MLFLOW_"))
    }
    env.update(
        CONVEYOR_HOME=str(config.root),
        PREFECT_HOME=str(config.prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_API_URL=config.prefect_api_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def prefect_server_env(config: StackConfig) -> dict[str, str]:
    env = _base_env(config)
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=config.prefect_database_url(),
        PREFECT_UI_API_URL=config.prefect_api_url,
        # A queued run (deployment concurrency limit) retries for its slot every 5 s, not 30 s.
        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="5",
    )
    return env


def mlflow_env(config: StackConfig) -> dict[str, str]:
    env = _base_env(config)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def worker_env(config: StackConfig) -> dict[str, str]:
    """The worker's environment, inherited by every flow run it starts."""
    env = _base_env(config)
    env.update(
        PREFECT_WORKER_QUERY_SECONDS="2",
        MLFLOW_TRACKING_URI=config.mlflow_url,
    )
    return env


def _commands(config: StackConfig) -> dict[str, list[str]]:
    artifacts = str(config.artifacts_dir)
    return {
        "prefect-server": [
            _bin("prefect"), "server", "start", "--host", HOST,
            "--port", str(config.prefect_port), "--analytics-off",
        ],
        "mlflow-server": [
            _bin("mlflow"), "server", "--host", HOST, "--port", str(config.mlflow_port),
            "--workers", "1", "--backend-store-uri", config.mlflow_backend_uri(),
            # Runs logged embedded (sqlite, local folder) and through the server land in the
            # same folder: new experiments get this local root, proxied ones the same files.
            "--default-artifact-root", artifacts, "--artifacts-destination", artifacts,
        ],
        "worker": [
            _bin("prefect"), "worker", "start", "--pool", POOL, "--type", "process",
            "--name", WORKER_NAME, "--no-create-pool-if-not-found",
        ],
    }  # fmt: skip


# --------------------------------------------------------------------------- health


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def prefect_healthy(config: StackConfig) -> bool:
    return _http_ok(f"{config.prefect_api_url}/health")


def mlflow_healthy(config: StackConfig) -> bool:
    return _http_ok(f"{config.mlflow_url}/health")


def worker_online(config: StackConfig) -> bool:
    """The worker registered with the pool and its heartbeat is current."""
    import httpx

    try:
        response = httpx.post(
            f"{config.prefect_api_url}/work_pools/{POOL}/workers/filter", json={}, timeout=2
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    return any(w["name"] == WORKER_NAME and w.get("status") == "ONLINE" for w in response.json())


def ensure_work_pool(api_url: str) -> None:
    """Create the process work pool (with the process worker's default job template) if missing."""
    import httpx

    if httpx.get(f"{api_url}/work_pools/{POOL}", timeout=10).status_code == 200:
        return  # the common case, without importing Prefect's worker machinery
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with SyncPrefectClient(api_url) as client:
        try:
            client.read_work_pool(POOL)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(
                WorkPoolCreate(
                    name=POOL,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="Conveyor's local process pool (created by `conveyor up`).",
                )
            )


# --------------------------------------------------------------------------- up / down / status


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str
    rss_bytes: int = 0


def read_state(config: StackConfig) -> StackState | None:
    return StackState.load(config.stack_file)


def _lock(config: StackConfig) -> Any:
    from filelock import FileLock

    config.state_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(config.state_dir / "stack.lock"), timeout=300)


def up(
    config: StackConfig,
    *,
    timeout: float = 180,
    deploy: bool = True,
    echo: Callable[[str], None] = log.info,
) -> tuple[StackState, bool]:
    """Start the stack (or find it running); return its state and whether it was already up."""
    with _lock(config):
        state = read_state(config)
        if state is not None:
            alive = {name: is_alive(svc) for name, svc in state.services.items()}
            if state.ready and alive and all(alive.values()):
                return state, True
            # A half-dead stack (a crash, an interrupted `up`): stop the rest, start afresh.
            echo("found a partly running stack; stopping what is left of it first")
            _terminate(state.services.values(), timeout=15)
            config.stack_file.unlink(missing_ok=True)
        return _start(config, timeout=timeout, deploy=deploy, echo=echo), False


def _start(
    config: StackConfig, *, timeout: float, deploy: bool, echo: Callable[[str], None]
) -> StackState:
    for env_name, port in (
        ("CONVEYOR_PREFECT_PORT", config.prefect_port),
        ("CONVEYOR_MLFLOW_PORT", config.mlflow_port),
    ):
        if not port_is_free(port):
            raise StackError(f"port {HOST}:{port} is in use; free it or set {env_name}")
    for folder in (config.logs_dir, config.prefect_home, config.artifacts_dir):
        folder.mkdir(parents=True, exist_ok=True)

    state = StackState(
        root=str(config.root),
        profile=config.profile,
        prefect_ui_url=config.prefect_ui_url,
        prefect_api_url=config.prefect_api_url,
        mlflow_url=config.mlflow_url,
        started_at=time.time(),
    )
    if config.database_url:
        created = ensure_databases(config.database_url, config.database_names)
        if created:
            echo(f"created PostgreSQL databases {', '.join(created)}")
        state.databases = {
            "prefect": config.prefect_database_url(hide_password=True),
            "mlflow": config.mlflow_backend_uri(hide_password=True),
        }

    startup = _Startup(config, state, deploy=deploy, echo=echo)
    try:
        startup.run(deadline=time.monotonic() + timeout)
    except BaseException:
        startup.abort()
        raise
    state.ready = True
    state.save(config.stack_file)
    return state


class _Startup:
    """Start the services and steps as soon as what each needs is ready, polling all at once.

    prefect-server and mlflow-server (after `mlflow db upgrade` on PostgreSQL) start at once;
    when the Prefect API answers, the pool is made, then the worker and `prefect deploy --all`
    start side by side; the per-spec deployments follow the deploy.
    """

    def __init__(
        self, config: StackConfig, state: StackState, *, deploy: bool, echo: Callable[[str], None]
    ) -> None:
        self.config, self.state, self.deploy, self.echo = config, state, deploy, echo
        self.commands = _commands(config)
        self.helpers: dict[str, subprocess.Popen[bytes]] = {}  # one-shot steps still running
        self.done: set[str] = set()

    def mark(self, step: str) -> None:
        self.done.add(step)
        self.state.timings[step] = round(time.time() - self.state.started_at, 2)

    def start_service(self, name: str, env: dict[str, str], url: str | None = None) -> None:
        service = _spawn(name, self.commands[name], env, self.config)
        service.url = url
        service.port = {"prefect-server": self.config.prefect_port}.get(
            name, self.config.mlflow_port if name == "mlflow-server" else None
        )
        self.state.services[name] = service
        self.state.save(self.config.stack_file)  # at once: an interrupted `up` can be stopped

    def helper_finished(self, name: str) -> bool:
        """Whether a one-shot step ended; raise, naming its log, if it failed."""
        proc = self.helpers[name]
        if proc.poll() is None:
            return False
        del self.helpers[name]
        if proc.returncode != 0:
            log_path = self.config.logs_dir / f"{name}.log"
            raise StackError(
                f"{name} failed (exit {proc.returncode}); see {log_path}: {_log_tail(log_path)}"
            )
        return True

    def run(self, deadline: float) -> None:
        config = self.config
        self.start_service("prefect-server", prefect_server_env(config), config.prefect_ui_url)
        if config.database_url and not mlflow_schema_current(config):
            # Migrations run once, before the server's single worker starts, never concurrently.
            upgrade = [_bin("mlflow"), "db", "upgrade", config.mlflow_backend_uri()]
            self.helpers["mlflow-db-upgrade"] = _run_detached(
                "mlflow-db-upgrade", upgrade, mlflow_env(config), config
            )
        else:
            self.start_service("mlflow-server", mlflow_env(config), config.mlflow_url)
        wanted = {"prefect-server", "mlflow-server", "worker"} | (
            {"spec-deployments"} if self.deploy else set()
        )
        while not wanted <= self.done:
            self.step()
            self.check_alive()
            if time.monotonic() > deadline:
                late = ", ".join(sorted(wanted - self.done))
                raise StackError(
                    f"not ready within the start-up timeout: {late}; see {config.logs_dir}"
                )
            time.sleep(0.2)

    def step(self) -> None:
        config, done = self.config, self.done
        if "prefect-server" not in done and prefect_healthy(config):
            self.mark("prefect-server")
            ensure_work_pool(config.prefect_api_url)
            self.start_service("worker", worker_env(config))
            if self.deploy:
                self.start_deploy()
        if "mlflow-db-upgrade" in self.helpers and self.helper_finished("mlflow-db-upgrade"):
            self.mark("mlflow-db-upgrade")
            self.start_service("mlflow-server", mlflow_env(config), config.mlflow_url)
        if "deploy" in self.helpers and self.helper_finished("deploy"):
            self.mark("prefect-deploy")
            self.sync_specs()
        if "worker" in self.state.services and "worker" not in done and worker_online(config):
            self.mark("worker")
        mlflow_started = "mlflow-server" in self.state.services
        if mlflow_started and "mlflow-server" not in done and mlflow_healthy(config):
            self.mark("mlflow-server")

    def start_deploy(self) -> None:
        """`prefect deploy --all` in the background, unless this server has it all already."""
        yaml_current, specs_current = deployments_current(self.config, self.config.prefect_api_url)
        if not yaml_current:
            self.helpers["deploy"] = _run_detached(
                "deploy", prefect_deploy_command(), deploy_env(self.config), self.config
            )
        elif specs_current:
            self.echo("deployments unchanged since the last deploy to this server")
            self.mark("spec-deployments")
        else:
            self.sync_specs()

    def sync_specs(self) -> None:
        report = sync_spec_deployments(self.config.prefect_api_url, self.config.root)
        if not report.errors:
            write_deploy_stamp(self.config, self.config.prefect_api_url, report)
        self.mark("spec-deployments")
        for line in report.lines():
            self.echo(line)

    def check_alive(self) -> None:
        for service in self.state.services.values():
            if not is_alive(service):
                raise StackError(
                    f"{service.name} exited during start-up; see {service.log}: "
                    f"{_log_tail(service.log)}"
                )

    def abort(self) -> None:
        """Stop everything this start-up began, helpers included; forget the state."""
        for proc in self.helpers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _terminate(self.state.services.values(), timeout=10)
        self.config.stack_file.unlink(missing_ok=True)


def _run_detached(
    name: str, cmd: list[str], env: dict[str, str], config: StackConfig
) -> subprocess.Popen[bytes]:
    """A one-shot helper command (migrations, deploy) logging to `.conveyor/logs/<name>.log`."""
    with open(config.logs_dir / f"{name}.log", "wb") as out:
        return subprocess.Popen(
            cmd, cwd=config.root, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def down(config: StackConfig, *, timeout: float = 20) -> list[str]:
    """Stop exactly the recorded process trees and check their ports are free; return names."""
    with _lock(config):
        state = read_state(config)
        if state is None:
            return []
        stopped = [name for name, svc in state.services.items() if is_alive(svc)]
        survivors = _terminate(state.services.values(), timeout=timeout)
        if survivors:
            raise StackError(f"could not stop {', '.join(survivors)} even with SIGKILL")
        ports = [svc.port for svc in state.services.values() if svc.port]
        deadline = time.monotonic() + timeout
        while (busy := [p for p in ports if not port_is_free(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        if busy:
            raise StackError(f"stopped the stack but port(s) {busy} are still in use")
        config.stack_file.unlink(missing_ok=True)
        return stopped


def status(config: StackConfig) -> tuple[StackState | None, list[ServiceStatus]]:
    """What runs: per service, pid alive, health and the memory of its process tree."""
    state = read_state(config)
    if state is None:
        return None, []
    checks: dict[str, tuple[Callable[[StackConfig], bool], str]] = {
        "prefect-server": (prefect_healthy, "API {url}"),
        "mlflow-server": (mlflow_healthy, "UI {url}"),
        "worker": (worker_online, f"pool {POOL}"),
    }
    rows = []
    for name, service in state.services.items():
        running = is_alive(service)
        check, detail = checks[name]
        healthy = running and check(config)
        rows.append(
            ServiceStatus(
                name=name,
                pid=service.pid,
                running=running,
                healthy=healthy,
                detail=detail.format(url=service.url),
                rss_bytes=rss_bytes(process_tree(service.pid)) if running else 0,
            )
        )
    return state, rows


# --------------------------------------------------------------------------- deployments


def prefect_deploy_command() -> list[str]:
    return [_bin("prefect"), "--no-prompt", "deploy", "--all"]


def deploy_env(config: StackConfig, api_url: str | None = None) -> dict[str, str]:
    env = _base_env(config)
    env["PREFECT_API_URL"] = api_url or config.prefect_api_url
    return env


def run_prefect_deploy(config: StackConfig, api_url: str) -> None:
    """`prefect deploy --all --no-prompt` from the project root, against `api_url`."""
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = config.logs_dir / "deploy.log"
    with open(log_path, "wb") as out:
        result = subprocess.run(
            prefect_deploy_command(),
            cwd=config.root,
            env=deploy_env(config, api_url),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(
            f"`prefect deploy --all` failed (exit {result.returncode}); see {log_path}: "
            f"{_log_tail(log_path)}"
        )


TRAINING_DEPLOYMENT = "training"
SPEC_TAG = "conveyor:spec"  # marks deployments generated from pipelines/*.yaml


@dataclass
class DeployReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"{verb} {', '.join(names)}"
            for verb, names in (
                ("created", self.created),
                ("updated", self.updated),
                ("unchanged", self.unchanged),
                ("removed", self.removed),
            )
            if names
        ]
        return out + [f"error: {error}" for error in self.errors]


def spec_deployment_name(spec_name: str) -> str:
    return f"train-{spec_name}"


def training_concurrency_name(spec_name: str) -> str:
    """The global concurrency limit the training flow holds for a model (one run at a time)."""
    return f"train-{spec_name}"


def sync_spec_deployments(api_url: str, root: Path) -> DeployReport:
    """Make one scheduled `train-<name>` deployment per spec under `<root>/pipelines`.

    Each copies the `training` deployment that `prefect deploy` made from prefect.yaml (flow,
    entrypoint, pull steps, pool, job variables), fixes `spec` to the model (the only choice its
    form offers), takes its schedule from the spec, and queues a second run of the model
    (limit 1, ENQUEUE). Deployments
    generated for specs that no longer exist are removed; the `training` deployment's `spec`
    field becomes a choice of the current specs.
    """
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import (
        DeploymentScheduleCreate,
        DeploymentUpdate,
        GlobalConcurrencyLimitCreate,
    )
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        DeploymentFilterTags,
    )
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    from conveyor.errors import SpecError
    from conveyor.spec import load_spec

    report = DeployReport()
    specs = {}
    for path in sorted([*(root / "pipelines").glob("*.yaml"), *(root / "pipelines").glob("*.yml")]):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            report.errors.append(str(exc))
            continue
        specs[spec.name] = spec

    with SyncPrefectClient(api_url) as client:
        templates = client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[TRAINING_DEPLOYMENT])
            )
        )
        if not templates:
            report.errors.append(
                f"no '{TRAINING_DEPLOYMENT}' deployment on {api_url}; run `prefect deploy --all`"
            )
            return report
        template = templates[0]
        schema = _schema_with_spec_choice(template.parameter_openapi_schema, sorted(specs))
        if schema != template.parameter_openapi_schema:
            client.update_deployment(template.id, DeploymentUpdate(parameter_openapi_schema=schema))

        existing = {
            d.name: d
            for d in client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[SPEC_TAG]))
            )
        }
        for name, spec in specs.items():
            deployment_name = spec_deployment_name(name)
            schedule = (
                CronSchedule(cron=spec.schedule.cron, timezone=spec.schedule.timezone)
                if spec.schedule.cron
                else None
            )
            wanted: dict[str, Any] = dict(
                flow_id=template.flow_id,
                name=deployment_name,
                description=f"Train the {name} model (pipelines/{Path(spec.source or '').name}).",
                entrypoint=template.entrypoint,
                path=template.path,
                pull_steps=template.pull_steps,
                work_pool_name=template.work_pool_name,
                work_queue_name=template.work_queue_name,
                job_variables=template.job_variables,
                # Only its own model: the queue below is per model, so is the deployment.
                parameter_openapi_schema=_schema_with_spec_choice(schema, [name]),
                enforce_parameter_schema=True,
                parameters={"spec": name},
                tags=sorted({*template.tags, SPEC_TAG, f"model:{name}"}),
                concurrency_limit=1,
                concurrency_options=ConcurrencyOptions(
                    collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
                ),
            )
            current = existing.get(deployment_name)
            if current is not None and _same_deployment(current, wanted, schedule):
                report.unchanged.append(deployment_name)
            else:
                client.create_deployment(  # an upsert on (flow, name)
                    **wanted,
                    schedules=[DeploymentScheduleCreate(schedule=schedule, active=True)]
                    if schedule
                    else [],
                )
                (report.updated if current is not None else report.created).append(deployment_name)
            limit_name = training_concurrency_name(name)
            try:
                client.read_global_concurrency_limit_by_name(limit_name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=limit_name, limit=1)
                )
        # A spec with a typo must not silently delete its model's schedule: prune only when
        # every spec parsed.
        if not report.errors:
            wanted_names = {spec_deployment_name(name) for name in specs}
            for deployment_name, deployment in existing.items():
                if deployment_name not in wanted_names:
                    client.delete_deployment(deployment.id)
                    report.removed.append(deployment_name)
    return report


def _schema_with_spec_choice(schema: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The flow's parameter schema with `spec` offered as a choice of the current specs."""
    schema = json.loads(json.dumps(schema or {}))
    prop = schema.get("properties", {}).get("spec")
    if prop is not None and names:
        prop["enum"] = names
        prop.setdefault("description", "The pipeline spec (pipelines/<name>.yaml) to train.")
    return schema


def _same_deployment(current: Any, wanted: dict[str, Any], schedule: Any) -> bool:
    """Whether an upsert would change nothing (an upsert also drops future scheduled runs)."""
    schedules = [(s.schedule.cron, s.schedule.timezone) for s in current.schedules]
    wanted_schedules = [(schedule.cron, schedule.timezone)] if schedule else []
    options = current.concurrency_options
    return (
        current.flow_id == wanted["flow_id"]
        and current.entrypoint == wanted["entrypoint"]
        and current.pull_steps == wanted["pull_steps"]
        and current.work_pool_name == wanted["work_pool_name"]
        and current.job_variables == wanted["job_variables"]
        and current.parameters == wanted["parameters"]
        and current.parameter_openapi_schema == wanted["parameter_openapi_schema"]
        and sorted(current.tags) == wanted["tags"]
        and current.description == wanted["description"]
        and current.global_concurrency_limit is not None
        and current.global_concurrency_limit.limit == 1
        and options is not None
        and options.collision_strategy == wanted["concurrency_options"].collision_strategy
        and sorted(schedules) == sorted(wanted_schedules)
        and not current.paused
    )


def deploy(
    config: StackConfig, api_url: str | None = None, *, specs_only: bool = False
) -> DeployReport:
    """`prefect deploy --all` then the per-spec deployments, against the stack or `api_url`."""
    if api_url is None:
        api_url = os.environ.get("PREFECT_API_URL")
    if api_url is None:
        state = read_state(config)
        if state is None:
            raise StackError(
                "no Prefect API to deploy to: run `conveyor up` or set PREFECT_API_URL"
            )
        api_url = state.prefect_api_url
    if not _http_ok(f"{api_url.rstrip('/')}/health"):
        raise StackError(f"the Prefect API at {api_url} does not answer")
    if not specs_only:
        run_prefect_deploy(config, api_url)
    report = sync_spec_deployments(api_url, config.root)
    if not report.errors and not specs_only:
        write_deploy_stamp(config, api_url, report)
    return report


# What was last deployed where: `up` skips `prefect deploy` (seconds of CPU importing the flows)
# when prefect.yaml, its entrypoint files and Prefect are unchanged and the server still has
# every deployment. A process worker runs the checkout's code, so other code changes need no
# deploy.


def _fingerprint(root: Path) -> dict[str, str]:
    from importlib.metadata import version

    import yaml

    prefect_yaml = root / "prefect.yaml"
    files = [prefect_yaml]
    try:
        raw = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        raw = {}
    for item in raw.get("deployments") or []:
        entrypoint = str(item.get("entrypoint") or "")
        if ":" in entrypoint:
            files.append(root / entrypoint.rsplit(":", 1)[0])
    specs = sorted([*(root / "pipelines").glob("*.yaml"), *(root / "pipelines").glob("*.yml")])
    return {
        "prefect": version("prefect"),
        "prefect_yaml": _digest_files(root, files),
        "specs": _digest_files(root, specs),
        "deployments": ",".join(sorted(str(d.get("name")) for d in raw.get("deployments") or [])),
    }


def _digest_files(root: Path, files: Iterable[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes() if file.is_file() else b"<missing>")
    return digest.hexdigest()


def write_deploy_stamp(config: StackConfig, api_url: str, report: DeployReport) -> None:
    stamp = {
        "api_url": api_url,
        **_fingerprint(config.root),
        "spec_deployments": sorted(report.created + report.updated + report.unchanged),
    }
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "deployed.json").write_text(json.dumps(stamp, indent=2) + "\n")


def deployments_current(config: StackConfig, api_url: str) -> tuple[bool, bool]:
    """(prefect.yaml's deployments current, per-spec deployments current) on this server."""
    import httpx

    try:
        stamp = json.loads((config.state_dir / "deployed.json").read_text())
    except (OSError, ValueError):
        return False, False
    now = {"api_url": api_url, **_fingerprint(config.root)}
    if any(stamp.get(key) != value for key, value in now.items() if key != "specs"):
        return False, False
    expected = [name for name in now["deployments"].split(",") if name]
    expected += list(stamp.get("spec_deployments", []))
    response = httpx.post(
        f"{api_url}/deployments/filter",
        json={"deployments": {"name": {"any_": expected}}, "limit": 200},
        timeout=10,
    )
    if response.status_code != 200:
        return False, False
    present = {item["name"] for item in response.json()}
    yaml_current = set(now["deployments"].split(",")) <= present
    return yaml_current, yaml_current and stamp.get("specs") == now["specs"] and set(
        expected
    ) <= present
