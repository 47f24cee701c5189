"""A new embedded MLflow store starts as a copy of the empty one `make install` made: real MLflow,
real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from conveyor import mlflow_database, registry
from conveyor.mlflow_database import TEMPLATE_TABLES, seed, template_path
from conveyor.sqlite_template import tables_with_rows


def revision(database: Path) -> str:
    with closing(sqlite3.connect(database)) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def test_make_install_left_the_empty_store_of_the_installed_mlflow(tmp_path: Path) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template = template_path()
    assert template.is_file(), "run `make install`: it builds MLflow's empty store"
    assert tables_with_rows(template) == TEMPLATE_TABLES  # no experiment, no run
    # At the head of the migrations MLflow runs on a store it creates itself.
    created = tmp_path / "created.db"
    SqlAlchemyStore(f"sqlite:///{created}", str(tmp_path / "artifacts")).engine.dispose()
    assert revision(template) == revision(created)


def test_the_first_client_of_a_new_store_works_on_the_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy holds no default experiment: MLflow makes it on opening, under this store's own
    artifact root, and everything a training writes lands in the copy."""
    store = tmp_path / ".conveyor" / "mlflow.db"
    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    seeded = []
    real_seed = mlflow_database.seed
    monkeypatch.setattr(mlflow_database, "seed", lambda url, template=None: seeded.append(real_seed(url, template)))

    opened = int(time.time() * 1000)
    client = registry.client()
    assert seeded == [True]
    experiment = client.create_experiment("churn")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "roc_auc", 0.9)
    client.create_registered_model("churn")
    default = client.get_experiment("0")
    assert default.name == "Default"
    assert default.creation_time >= opened  # made as this store was opened, not carried in the copy
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT value FROM metrics").fetchall() == [(0.9,)]


def test_an_existing_store_is_never_replaced(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"someone's store")
    assert seed(f"sqlite:///{store}") is False
    assert store.read_bytes() == b"someone's store"
    assert seed("postgresql://127.0.0.1:5432/mlflow") is False  # only a SQLite file is ever seeded
