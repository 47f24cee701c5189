"""The stack launcher's pure parts: database URLs, secrets kept off command lines, the deployment forms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.stack.config import StackConfig, StackError, mask_passwords, without_password
from app.stack.deploy import TRIGGER_TITLE, model_form, spec_form, training_form
from app.stack.services import commands, mlflow_env, mlflow_upgrade_command, prefect_server_env

SECRET = "s3cr%40t"  # URL-encoded "s3cr@t"
URL = f"postgresql://bob:{SECRET}@127.0.0.1:5432"
TRAINING_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {"type": "string", "title": "spec"},
        "data_path": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "trigger": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "trigger"},
    },
    "required": ["spec"],
}


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"error: {URL}/x failed", "error: postgresql://bob:***@127.0.0.1:5432/x failed"),
        ("postgresql+psycopg://u:p@h/db and http://a:b@c", "postgresql+psycopg://u:***@h/db and http://a:***@c"),
        ("postgresql://postgres@127.0.0.1:5432", "postgresql://postgres@127.0.0.1:5432"),
        ("time 12:30@noon, no URL", "time 12:30@noon, no URL"),
    ],
)
def test_mask_passwords_hides_only_the_password_of_a_url(text: str, masked: str) -> None:
    assert mask_passwords(text) == masked


def test_postgresql_profile_urls_name_one_driver_each_and_can_drop_the_password(tmp_path: Path) -> None:
    config = StackConfig(tmp_path, database_url=URL, database_prefix="p")
    assert config.mlflow_backend_uri() == f"postgresql+psycopg://bob:{SECRET}@127.0.0.1:5432/p_mlflow"
    assert config.prefect_database_url() == f"postgresql+asyncpg://bob:{SECRET}@127.0.0.1:5432/p_prefect"
    assert without_password(config.mlflow_backend_uri()) == "postgresql+psycopg://bob@127.0.0.1:5432/p_mlflow"
    assert config.database_password == "s3cr@t"
    assert config.database_conninfo("p_mlflow") == f"postgresql://bob:{SECRET}@127.0.0.1:5432/p_mlflow"


def test_no_password_on_a_command_line_only_in_the_servers_environment(tmp_path: Path) -> None:
    config = StackConfig(tmp_path, database_url=URL)
    lines = [*commands(config).values(), mlflow_upgrade_command(config)]
    assert not any("s3cr" in arg for line in lines for arg in line)
    assert mlflow_upgrade_command(config)[-1] == "postgresql+psycopg://bob@127.0.0.1:5432/conveyor_mlflow"
    assert mlflow_env(config)["PGPASSWORD"] == "s3cr@t"
    assert SECRET in mlflow_env(config)["MLFLOW_BACKEND_STORE_URI"]
    assert SECRET in prefect_server_env(config)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]


@pytest.mark.parametrize("raw", ["mysql://bob:hunter2@db/x", "not a url hunter2"])
def test_a_bad_database_url_is_refused_without_repeating_it(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", raw)
    with pytest.raises(StackError) as refused:
        StackConfig.from_env(Path.cwd())
    assert "hunter2" not in str(refused.value) and "CONVEYOR_DATABASE_URL" in str(refused.value)


def test_training_form_offers_the_specs_and_marks_trigger_as_the_automations_field() -> None:
    form = training_form(TRAINING_SCHEMA, ["iris", "wine"])
    assert form["properties"]["spec"]["enum"] == ["iris", "wine"]
    assert form["properties"]["trigger"]["title"] == TRIGGER_TITLE
    assert form["required"] == ["spec"]
    assert TRAINING_SCHEMA["properties"]["spec"] == {"type": "string", "title": "spec"}  # a copy was changed


def test_a_model_deployment_form_offers_the_models() -> None:
    schema = {"properties": {"model": {"type": "string"}, "labels_path": {"type": "string"}}, "required": ["model"]}
    assert model_form(schema, ["iris"])["properties"]["model"]["enum"] == ["iris"]
    assert model_form(schema, [])["properties"]["model"] == {"type": "string"}  # no specs: free text
    assert model_form(None, ["iris"]) == {}


def test_a_train_deployment_form_requires_nothing_so_quick_run_opens_no_dialog() -> None:
    form = spec_form(training_form(TRAINING_SCHEMA, ["iris", "wine"]), "wine")
    assert "required" not in form  # Prefect's UI opens the parameters dialog iff `required` is non-empty
    assert form["properties"]["spec"]["enum"] == ["wine"] and form["properties"]["spec"]["default"] == "wine"


def test_a_process_is_alive_only_with_its_own_start_and_old_records_still_read(tmp_path: Path) -> None:
    """`down` must stop what `up` started, never a later process that reused the pid."""
    import json

    import psutil

    from app.stack.processes import is_alive, process_tree
    from app.stack.state import Service, StackState
    from conveyor.process_identity import started_since_boot

    me = psutil.Process()
    started = started_since_boot(me.pid)
    assert started is not None and 0 < started <= float(Path("/proc/uptime").read_text().split()[0])
    assert is_alive(Service("worker", me.pid, started, "", []))
    assert not is_alive(Service("worker", me.pid, started - 5, "", []))  # the pid, reused
    assert me.pid in process_tree(me.pid)
    # Earlier stack.json files: the kernel's start ticks (field 22 of /proc/<pid>/stat), then
    # psutil's wall-clock creation time. Both still name the process; a reused pid still does not.
    stat = Path(f"/proc/{me.pid}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    path = tmp_path / "stack.json"
    fields = {"root": str(tmp_path), "profile": "sqlite", "prefect_ui_url": "", "prefect_api_url": "", "mlflow_url": ""}
    for recorded, alive in (
        ({"start_ticks": ticks}, True),
        ({"create_time": me.create_time()}, True),
        ({"create_time": me.create_time() - 5}, False),
    ):
        legacy = {"name": "worker", "pid": me.pid, **recorded, "log": "", "cmd": []}
        path.write_text(json.dumps({**fields, "started_at": 0, "services": {"worker": legacy}}))
        state = StackState.load(path)
        assert state is not None and is_alive(state.services["worker"]) is alive, recorded


# The hardened profile (CONVEYOR_AUTH=1): secrets generated once, owner-only, never on a command line.


@pytest.mark.parametrize(("raw", "on"), [("", False), ("0", False), ("off", False), ("1", True), ("TRUE", True)])
def test_conveyor_auth_reads_as_on_or_off(raw: str, on: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_AUTH", raw)
    assert StackConfig.from_env(Path.cwd()).auth is on


def test_conveyor_auth_refuses_a_value_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_AUTH", "maybe")
    with pytest.raises(StackError, match="CONVEYOR_AUTH"):
        StackConfig.from_env(Path.cwd())


def test_credentials_are_generated_once_owner_only_and_kept(tmp_path: Path) -> None:
    import stat

    from app.stack.auth import ensure_credentials, read_credentials

    config = StackConfig(tmp_path, auth=True)
    assert read_credentials(config) is None
    first = ensure_credentials(config)
    assert ensure_credentials(config) == first == read_credentials(config)
    for path in (config.auth_file, config.auth_env_file, config.mlflow_auth_config):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(config.state_dir.stat().st_mode) == 0o700  # the stores on disk: the owner's only
    assert first.mlflow_password not in repr(first) and first.prefect_auth_string not in repr(first)
    assert len({first.mlflow_password, first.prefect_auth_string, first.flask_secret_key}) == 3
    assert first.mlflow_password not in config.mlflow_auth_config.read_text()  # the ini holds no secret


def test_a_credentials_file_others_can_read_is_refused(tmp_path: Path) -> None:
    from app.stack.auth import ensure_credentials, read_credentials

    config = StackConfig(tmp_path, auth=True)
    ensure_credentials(config)
    config.auth_file.chmod(0o644)
    with pytest.raises(StackError, match="chmod 600"):
        read_credentials(config)


def test_a_user_store_without_its_credentials_is_not_silently_given_new_ones(tmp_path: Path) -> None:
    from app.stack.auth import ensure_credentials

    config = StackConfig(tmp_path, auth=True)
    ensure_credentials(config)
    config.mlflow_auth_db.write_bytes(b"")  # what the first server start leaves
    config.auth_file.unlink()
    with pytest.raises(StackError, match="mlflow_auth.db"):
        ensure_credentials(config)


def test_the_auth_env_file_exports_what_a_client_needs(tmp_path: Path) -> None:
    import subprocess

    from app.stack.auth import ensure_credentials

    config = StackConfig(tmp_path, prefect_port=4300, mlflow_port=5300, auth=True)
    credentials = ensure_credentials(config)
    script = f"source {config.auth_env_file} && env"
    out = subprocess.run(["bash", "-c", script], env={}, capture_output=True, text=True, check=True).stdout
    assert "PREFECT_API_URL=http://127.0.0.1:4300/api" in out.splitlines()
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5300" in out.splitlines()
    assert f"PREFECT_API_AUTH_STRING={credentials.prefect_auth_string}" in out.splitlines()
    assert f"MLFLOW_TRACKING_PASSWORD={credentials.mlflow_password}" in out.splitlines()
    assert "MLFLOW_TRACKING_USERNAME=admin" in out.splitlines()


def test_hardened_services_get_secrets_in_their_environment_only(tmp_path: Path) -> None:
    from app.stack.auth import ensure_credentials
    from app.stack.services import deploy_env, worker_env

    config = StackConfig(tmp_path, mlflow_port=5300, auth=True)
    credentials = ensure_credentials(config)
    mlflow_line = commands(config)["mlflow-server"]
    assert mlflow_line[mlflow_line.index("--app-name") + 1] == "basic-auth"
    assert mlflow_line[mlflow_line.index("--allowed-hosts") + 1] == "127.0.0.1:5300,localhost:5300"
    assert mlflow_line[mlflow_line.index("--cors-allowed-origins") + 1] == "http://127.0.0.1:5300,http://localhost:5300"
    secrets = (credentials.mlflow_password, credentials.prefect_auth_string, credentials.flask_secret_key)
    assert not any(secret in arg for line in commands(config).values() for arg in line for secret in secrets)
    server = mlflow_env(config)
    assert server["MLFLOW_AUTH_ADMIN_PASSWORD"] == credentials.mlflow_password
    assert server["MLFLOW_AUTH_CONFIG_PATH"] == str(config.mlflow_auth_config)
    assert server["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert prefect_server_env(config)["PREFECT_SERVER_API_AUTH_STRING"] == credentials.prefect_auth_string
    worker = worker_env(config)
    assert worker["PREFECT_API_AUTH_STRING"] == credentials.prefect_auth_string
    assert (worker["MLFLOW_TRACKING_USERNAME"], worker["MLFLOW_TRACKING_PASSWORD"]) == (
        "admin",
        credentials.mlflow_password,
    )
    assert deploy_env(config)["PREFECT_API_AUTH_STRING"] == credentials.prefect_auth_string


def test_the_open_profile_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.stack.services import deploy_env, worker_env

    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    config = StackConfig(tmp_path)
    assert not any(arg in commands(config)["mlflow-server"] for arg in ("--app-name", "--allowed-hosts"))
    envs = [mlflow_env(config), prefect_server_env(config), worker_env(config), deploy_env(config)]
    assert not any("AUTH" in key or "TRACKING_PASSWORD" in key for env in envs for key in env)
    assert not config.auth_file.exists()


def test_a_recorded_process_is_still_known_after_the_wall_clock_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in CI: mid-run, every recorded pid of two stacks read as gone, so `down` stopped
    nothing and left their ports busy, and `up` found a "partly running" stack it could not replace.
    psutil's creation time is the kernel's boot time (whole seconds in /proc/stat, derived from the
    wall clock) plus the start in ticks since boot, so an NTP step or slew moves it. The kernel's
    boot time after such a step stands in here for the step itself, which a test cannot make."""
    import subprocess
    import sys

    import psutil

    from app.stack.processes import is_alive, terminate
    from app.stack.state import Service
    from conveyor.process_identity import started_since_boot

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        started = started_since_boot(child.pid)
        assert started is not None
        service = Service("worker", child.pid, started, "", [])
        before = psutil.Process(child.pid).create_time()
        boot = psutil.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 1.0)
        assert psutil.Process(child.pid).create_time() == pytest.approx(before + 1.0)  # the step is seen
        assert is_alive(service)
        assert terminate([service], timeout=10) == []
        assert not is_alive(service)  # stopped, not left running
    finally:
        child.kill()
        child.wait()


def test_the_work_pool_starts_the_engine_directly_and_keeps_a_command_someone_set(prefect_harness: None) -> None:
    """The pool `up` makes runs `python -m prefect.engine` (Prefect's own server, the harness's);
    a pool made without a command gets it; a command set on the pool is left alone."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.settings import PREFECT_API_URL

    from app.stack.config import POOL
    from app.stack.health import FLOW_RUN_COMMAND, ensure_work_pool

    def command() -> object:
        with get_client(sync_client=True) as client:
            return client.read_work_pool(POOL).base_job_template["variables"]["properties"]["command"]["default"]

    def set_command(value: str | None) -> None:
        with get_client(sync_client=True) as client:
            template = client.read_work_pool(POOL).base_job_template
            template["variables"]["properties"]["command"]["default"] = value
            client.update_work_pool(POOL, WorkPoolUpdate(base_job_template=template))

    api_url = str(PREFECT_API_URL.value())
    ensure_work_pool(api_url)
    assert command() == FLOW_RUN_COMMAND
    set_command(None)  # as Prefect's default template, which an earlier `up` used
    ensure_work_pool(api_url)
    assert command() == FLOW_RUN_COMMAND
    set_command("/opt/py/bin/python -m prefect.engine")
    ensure_work_pool(api_url)
    assert command() == "/opt/py/bin/python -m prefect.engine"


WORKER_LIKE = """
import os, signal, time
from prefect.utilities.processutils import setup_signal_handlers_worker
setup_signal_handlers_worker(os.getpid(), "the process worker", print)  # what `prefect worker start` does
print("ready", flush=True)
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


def test_a_worker_started_from_a_background_job_still_stops_on_sigterm(tmp_path: Path) -> None:
    """`conveyor up &` (or under nohup) runs with SIGINT ignored, and children inherit that.
    Prefect's worker turns SIGTERM into a SIGINT to itself, so a worker that inherited the ignore
    never stopped: `down` waited, then killed it. A service now starts with SIGINT at its default."""
    import signal
    import sys
    import time

    from app.stack.processes import spawn, terminate

    config = StackConfig(tmp_path)
    config.logs_dir.mkdir(parents=True)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        service = spawn("worker", [sys.executable, "-c", WORKER_LIKE], dict(os.environ), config)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # this process's own choice is kept
    finally:
        signal.signal(signal.SIGINT, previous)
    log = Path(service.log)
    deadline = time.monotonic() + 60
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ready" in log.read_text(), log.read_text()
    assert terminate([service], timeout=10) == []
    assert "stopped" in log.read_text(), log.read_text()  # by its own SIGINT, not by SIGKILL
