"""A new embedded MLflow store starts as a copy of an empty one, made once per MLflow version at install.

MLflow creates the tables of a SQLite store that has none: its migrations, about 1 s and 0.85
CPU-seconds here, paid by the first command of every project, by `make up` on a new stack, and by
every test that trains into a store of its own. The result is the same schema each time, so
`make install` makes it once (`python -m conveyor.mlflow_database`), and the first Conveyor client
of a SQLite store whose file does not exist copies it into place (`registry.prepare_store`).
MLflow's own start-up still runs on the copy: its schema check finds the migrations at their head.

The template holds the schema only. The default experiment, whose artifact location names the
store's own folder, is removed from it, and MLflow creates it in each copy as it opens it. Only a
missing file is ever written, never over another (`conveyor.sqlite_template`); an MLflow upgraded
without `make install` has no template of its version, and MLflow creates the store as before.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from conveyor import sqlite_template

# What MLflow writes to a new store besides the default experiment: the migrations' mark and the
# default workspace. A template holding anything else is refused.
TEMPLATE_TABLES = frozenset({"alembic_version", "workspaces"})


def template_path() -> Path:
    """Where `make install` keeps the template of the installed MLflow: inside the environment."""
    return Path(sys.prefix) / "share" / "conveyor" / f"mlflow-{version('mlflow')}.db"


def seed(uri: str, template: Path | None = None) -> bool:
    """Copy the template to the file of a SQLite store URI (`sqlite:////abs/mlflow.db`) that does
    not exist yet; True when it copied."""
    return sqlite_template.seed(uri, template or template_path())


def check_new(database: Path) -> None:
    sqlite_template.check_rows(database, TEMPLATE_TABLES, "MLflow store")


def build_template(destination: Path | None = None) -> Path:
    """Let the installed MLflow create a store, take its default experiment out, keep a copy."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    destination = destination or template_path()
    with tempfile.TemporaryDirectory() as scratch:
        database = Path(scratch) / "mlflow.db"
        uri = f"sqlite:///{database}"
        SqlAlchemyStore(uri, str(Path(scratch) / "artifacts")).engine.dispose()
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.execute("DELETE FROM experiments")
            db.commit()
        check_new(database)
        sqlite_template.keep(database, destination)
    return destination


if __name__ == "__main__":
    sys.stdout.write(f"MLflow's empty store: {build_template()}\n")
