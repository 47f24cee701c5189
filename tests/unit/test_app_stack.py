"""The stack launcher's pure parts: database URLs, secrets kept off command lines, the deployment forms."""

from __future__ import annotations

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


def test_a_process_is_alive_only_with_its_own_creation_time_and_old_records_still_read(tmp_path: Path) -> None:
    """`down` must stop what `up` started, never a later process that reused the pid."""
    import json

    import psutil

    from app.stack.processes import is_alive, process_tree
    from app.stack.state import Service, StackState

    me = psutil.Process()
    assert is_alive(Service("worker", me.pid, me.create_time(), "", []))
    assert not is_alive(Service("worker", me.pid, me.create_time() - 5, "", []))  # the pid, reused
    assert me.pid in process_tree(me.pid)
    # A stack.json written before psutil recorded the kernel's start ticks (field 22 of /proc/<pid>/stat).
    stat = Path(f"/proc/{me.pid}/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    legacy = {"name": "worker", "pid": me.pid, "start_ticks": ticks, "log": "", "cmd": []}
    path = tmp_path / "stack.json"
    fields = {"root": str(tmp_path), "profile": "sqlite", "prefect_ui_url": "", "prefect_api_url": "", "mlflow_url": ""}
    path.write_text(json.dumps({**fields, "started_at": 0, "services": {"worker": legacy}}))
    state = StackState.load(path)
    assert state is not None and is_alive(state.services["worker"])
