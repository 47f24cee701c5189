"""`up`, `down` and `status`: start the services in order of need, stop exactly what was started.

`up` writes what it started to `.conveyor/stack.json` (pids, their start since boot, ports) so
that `down` stops exactly those process trees and nothing that merely shares a name or a port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.stack import scaled, serving
from app.stack.auth import ensure_credentials
from app.stack.config import HOST, POOL, StackConfig, StackError, without_password
from app.stack.deploy import sync_spec_deployments
from app.stack.deploy_stamp import deployments_current, write_deploy_stamp
from app.stack.health import ensure_work_pool, mlflow_healthy, prefect_healthy, stack_auth_string, worker_online
from app.stack.postgres import ensure_databases, mlflow_schema_current
from app.stack.processes import (
    is_alive,
    log_tail,
    port_is_free,
    process_tree,
    rss_bytes,
    run_detached,
    spawn,
    terminate,
)
from app.stack.services import (
    base_env,
    commands,
    dask_env,
    deploy_env,
    mlflow_env,
    mlflow_upgrade_command,
    prefect_deploy_command,
    prefect_server_env,
    worker_env,
)
from app.stack.state import Service, StackState, read_state
from conveyor import prefect_database, registry

log = logging.getLogger(__name__)


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str
    rss_bytes: int = 0


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
                if state.auth != config.auth:
                    running, wanted = (_profile_name(flag) for flag in (state.auth, config.auth))
                    raise StackError(f"the stack is up {running}; `conveyor down` first to start it {wanted}")
                _refuse_other_scale(config, scaled.from_state(config, state))
                return state, True
            # A half-dead stack (a crash, an interrupted `up`): stop the rest, start afresh.
            echo("found a partly running stack; stopping what is left of it first")
            terminate(state.services.values(), timeout=15)
            config.stack_file.unlink(missing_ok=True)
        return _start(config, timeout=timeout, deploy=deploy, echo=echo), False


def _profile_name(auth: bool) -> str:
    return "with the auth profile (CONVEYOR_AUTH=1)" if auth else "without the auth profile"


def _refuse_other_scale(wanted: StackConfig, running: StackConfig) -> None:
    """A running stack with other Dask workers or S3 setting than asked for is not "already up"."""
    if (running.dask_workers, running.s3) != (wanted.dask_workers, wanted.s3):
        now = f"CONVEYOR_DASK_WORKERS={running.dask_workers} CONVEYOR_S3={int(running.s3)}"
        asked = f"CONVEYOR_DASK_WORKERS={wanted.dask_workers} CONVEYOR_S3={int(wanted.s3)}"
        raise StackError(f"the stack is up with {now}; `conveyor down` first to start it with {asked}")


def _start(config: StackConfig, *, timeout: float, deploy: bool, echo: Callable[[str], None]) -> StackState:
    for env_name, port in (
        ("CONVEYOR_PREFECT_PORT", config.prefect_port),
        ("CONVEYOR_MLFLOW_PORT", config.mlflow_port),
        ("CONVEYOR_SERVING_PORT", serving.port()),
    ):
        if not port_is_free(port):
            raise StackError(f"port {HOST}:{port} is in use; free it or set {env_name}")
    for folder in (config.logs_dir, config.prefect_home, config.artifacts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if config.auth:
        ensure_credentials(config)  # generated at the first hardened start, kept afterwards
    config = scaled.with_ports(config)
    if config.s3:
        config.seaweedfs_dir.mkdir(parents=True, exist_ok=True)
        scaled.ensure_s3_identity(config)  # generated at the first S3 start, kept afterwards

    state = StackState(
        root=str(config.root),
        profile=config.profile,
        prefect_ui_url=config.prefect_ui_url,
        prefect_api_url=config.prefect_api_url,
        mlflow_url=config.mlflow_url,
        started_at=time.time(),
        auth=config.auth,
        dask_address=config.dask_address,
        dask_dashboard_url=scaled.dashboard_url(config),
        s3_endpoint_url=config.s3_endpoint_url,
    )
    if config.database_url:
        created = ensure_databases(config.database_url, config.database_names)
        if created:
            echo(f"created PostgreSQL databases {', '.join(created)}")
        state.databases = {
            "prefect": without_password(config.prefect_database_url()),
            "mlflow": without_password(config.mlflow_backend_uri()),
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

    def __init__(self, config: StackConfig, state: StackState, *, deploy: bool, echo: Callable[[str], None]) -> None:
        self.config, self.state, self.deploy, self.echo = config, state, deploy, echo
        self.commands = commands(config)
        self.helpers: dict[str, subprocess.Popen[bytes]] = {}  # one-shot steps still running
        self.done: set[str] = set()

    def mark(self, step: str) -> None:
        self.done.add(step)
        self.state.timings[step] = round(time.time() - self.state.started_at, 2)

    def start_service(self, name: str, env: dict[str, str], url: str | None = None) -> None:
        service = spawn(name, self.commands[name], env, self.config)
        service.url = url
        service.port = {
            "prefect-server": self.config.prefect_port,
            "mlflow-server": self.config.mlflow_port,
            scaled.DASK_SCHEDULER: self.config.dask_port,
            scaled.SEAWEEDFS: self.config.s3_port,
        }.get(name)
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
            raise StackError(f"{name} failed (exit {proc.returncode}); see {log_path}: {log_tail(log_path)}")
        return True

    def run(self, deadline: float) -> None:
        config = self.config
        prefect_database.seed(config.prefect_database_url())  # a new stack's SQLite: a copy, not 116 migrations
        self.start_service("prefect-server", prefect_server_env(config), config.prefect_ui_url)
        if config.database_url and not mlflow_schema_current(config):
            # Migrations run once, before the server's single worker starts, never concurrently.
            self.helpers["mlflow-db-upgrade"] = run_detached(
                "mlflow-db-upgrade", mlflow_upgrade_command(config), mlflow_env(config), config
            )
        else:
            registry.prepare_store(config.mlflow_backend_uri())  # SQLite: a copy of the empty store, in WAL mode
            self.start_service("mlflow-server", mlflow_env(config), config.mlflow_url)
        wanted = {"prefect-server", "mlflow-server", "worker"} | ({"spec-deployments"} if self.deploy else set())
        wanted |= self.start_scaled()
        wanted.add(serving.SERVING)
        while not wanted <= self.done:
            self.step()
            self.check_alive()
            if time.monotonic() > deadline and not wanted <= self.done:  # the last step may have finished it
                late = ", ".join(sorted(wanted - self.done))
                raise StackError(f"not ready within the start-up timeout: {late}; see {config.logs_dir}")
            time.sleep(0.2)

    def step(self) -> None:
        config, done = self.config, self.done
        if "prefect-server" not in done and prefect_healthy(config):
            self.mark("prefect-server")
            ensure_work_pool(config.prefect_api_url, stack_auth_string(config))
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
        self.step_serving()
        self.step_scaled()

    def step_serving(self) -> None:
        """`conveyor serve` once MLflow answers; ready when its /health does (app/stack/serving.py)."""
        services = self.state.services
        if "mlflow-server" in self.done and serving.SERVING not in services:
            port = serving.port()
            service = spawn(serving.SERVING, serving.command(port), serving.env(self.config), self.config)
            service.url, service.port = serving.url(port), port
            services[serving.SERVING] = service
            self.state.save(self.config.stack_file)
        elif (
            serving.SERVING in services
            and serving.SERVING not in self.done
            and serving.healthy(services[serving.SERVING].url)
        ):
            self.mark(serving.SERVING)

    def start_scaled(self) -> set[str]:
        """SeaweedFS and the Dask processes, when asked for; the steps that say they are ready."""
        config, steps = self.config, set()
        if config.s3:
            self.start_service(scaled.SEAWEEDFS, base_env(config), config.s3_endpoint_url)
            steps.add(scaled.SEAWEEDFS)
        if config.dask_workers:
            for name in (scaled.DASK_SCHEDULER, *scaled.dask_worker_names(config)):
                self.start_service(name, dask_env(config), config.dask_address)
            steps |= {scaled.DASK_SCHEDULER, "dask-workers"}
        return steps

    def step_scaled(self) -> None:
        config, done, services = self.config, self.done, self.state.services
        if scaled.SEAWEEDFS in services and scaled.SEAWEEDFS not in done and scaled.ensure_bucket(config):
            self.mark(scaled.SEAWEEDFS)
        scheduler_starting = scaled.DASK_SCHEDULER in services and scaled.DASK_SCHEDULER not in done
        if scheduler_starting and scaled.dask_scheduler_healthy(config):
            self.mark(scaled.DASK_SCHEDULER)
        workers_starting = scaled.DASK_SCHEDULER in done and "dask-workers" not in done
        if workers_starting and set(scaled.dask_worker_names(config)) <= scaled.dask_workers_connected(config):
            self.mark("dask-workers")

    def start_deploy(self) -> None:
        """`prefect deploy --all` in the background, unless this server has it all already."""
        yaml_current, specs_current = deployments_current(self.config, self.config.prefect_api_url)
        if not yaml_current:
            self.helpers["deploy"] = run_detached(
                "deploy", prefect_deploy_command(), deploy_env(self.config), self.config
            )
        elif specs_current:
            self.echo("deployments unchanged since the last deploy to this server")
            self.mark("spec-deployments")
        else:
            self.sync_specs()

    def sync_specs(self) -> None:
        report = sync_spec_deployments(self.config.prefect_api_url, self.config.root, stack_auth_string(self.config))
        if not report.errors:
            write_deploy_stamp(
                self.config, self.config.prefect_api_url, report.created + report.updated + report.unchanged
            )
        self.mark("spec-deployments")
        for line in report.lines():
            self.echo(line)

    def check_alive(self) -> None:
        for service in self.state.services.values():
            if not is_alive(service):
                raise StackError(f"{service.name} exited during start-up; see {service.log}: {log_tail(service.log)}")

    def abort(self) -> None:
        """Stop everything this start-up began, helpers included; forget the state."""
        for proc in self.helpers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        terminate(self.state.services.values(), timeout=10)
        self.config.stack_file.unlink(missing_ok=True)


def down(config: StackConfig, *, timeout: float = 20) -> list[str]:
    """Stop exactly the recorded process trees and check their ports are free; return names."""
    with _lock(config):
        state = read_state(config)
        if state is None:
            return []
        stopped = [name for name, svc in state.services.items() if is_alive(svc)]
        clients, servers, store = _stop_order(list(state.services.values()))
        survivors = terminate(clients, timeout=timeout) + terminate(servers, timeout=timeout)
        survivors += terminate(store, timeout=min(timeout, scaled.SEAWEEDFS_STOP_GRACE), expect_kill=True)
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


def _stop_order(services: list[Service]) -> tuple[list[Service], list[Service], list[Service]]:
    """The clients, the servers they talk to, and the S3 store, in the order they stop (any may be empty).

    The worker, the serving process and the Dask workers first: stopping, they finish what they
    are doing against servers that still answer (seen: `conveyor serve` loading a champion while
    MLflow stopped beside it retried MLflow for 20 s and was SIGKILLed). Then the Prefect and
    MLflow servers and the Dask scheduler; SeaweedFS last, since the servers may still be writing
    to it.
    """
    server_names = {"prefect-server", "mlflow-server", scaled.DASK_SCHEDULER}
    store = [svc for svc in services if svc.name == scaled.SEAWEEDFS]
    servers = [svc for svc in services if svc.name in server_names]
    clients = [svc for svc in services if svc not in store and svc not in servers]
    return clients, servers, store


def status(config: StackConfig) -> tuple[StackState | None, list[ServiceStatus]]:
    """What runs: per service, pid alive, health and the memory of its process tree."""
    state = read_state(config)
    if state is None:
        return None, []
    config = scaled.from_state(config, state)  # check the stack as it was started
    checks: dict[str, tuple[Callable[[StackConfig], bool], str]] = {
        "prefect-server": (prefect_healthy, "API {url}"),
        "mlflow-server": (mlflow_healthy, "UI {url}"),
        "worker": (worker_online, f"pool {POOL}"),
        serving.SERVING: (lambda _: serving.healthy(state.services[serving.SERVING].url), "models {url}"),
    }
    rows = []

    def is_up(_: StackConfig) -> bool:
        return True  # a service with no health check of its own: running is healthy

    for name, service in state.services.items():
        running = is_alive(service)
        check, detail = checks.get(name) or scaled.check(name) or (is_up, "")
        rows.append(
            ServiceStatus(
                name=name,
                pid=service.pid,
                running=running,
                healthy=running and check(config),
                detail=detail.format(url=service.url),
                rss_bytes=rss_bytes(process_tree(service.pid)) if running else 0,
            )
        )
    return state, rows
