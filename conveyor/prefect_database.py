"""A new Prefect database starts as a copy of an empty one, made once per Prefect version at install.

A Prefect server on a SQLite database file that does not exist yet creates it: Prefect's 116
migrations, then its block types, about 5 s and 5 CPU-seconds here before it answers. That is the
embedded mode's first command in every Prefect home, every new stack, and every new project the
tests make. The result is the same file each time, so `make install` makes it once
(`python -m conveyor.prefect_database`: a temporary server of the installed Prefect on an empty
database in a scratch folder), and a server about to start on a SQLite file that does not exist
gets a copy of it. Prefect's own start-up still runs: its migrations find the copy at their head
and do nothing, and its block registration finds its types there.

Only a missing file is ever written, never over another (`conveyor.sqlite_template`). A Prefect upgraded
without `make install` has no template of its version, and its server creates the database as
before.
"""

from __future__ import annotations

import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from conveyor import sqlite_template

# What a Prefect server writes to a new database before its first request: the migrations' mark
# and the block types. A template holding anything else (a run, a secret's key) is refused.
TEMPLATE_TABLES = frozenset({"alembic_version", "block_type", "block_schema", "block_schema_reference"})
DATABASE_URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
# The migrations took 11 s here on a quiet machine; an install on a loaded one must not fail at
# Prefect's 20 s start-up timeout.
BUILD_TIMEOUT_S = 300.0


def template_path() -> Path:
    """Where `make install` keeps the template of the installed Prefect: inside the environment."""
    return Path(sys.prefix) / "share" / "conveyor" / f"prefect-{version('prefect')}.db"


def seed(url: str, template: Path | None = None) -> bool:
    """Copy the template (the installed Prefect's, by default) to the database file of `url` when
    there is no such file yet (`conveyor.sqlite_template.seed`)."""
    return sqlite_template.seed(url, template or template_path())


def check_new(database: Path) -> None:
    """Refuse a database that holds anything but a new one's schema and block types, or lacks them."""
    sqlite_template.check_rows(database, TEMPLATE_TABLES, "Prefect database")


def build_template(destination: Path | None = None) -> Path:
    """Let a temporary server of the installed Prefect create a database, then keep a copy of it."""
    from conveyor.temporary_api import TemporaryAPI

    destination = destination or template_path()
    with tempfile.TemporaryDirectory() as scratch:
        database = Path(scratch) / "prefect.db"
        # Prefect's start-up in full, whatever the environment says: the block types are registered.
        registering = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "true", "PREFECT_API_DATABASE_MIGRATE_ON_START": "true"}
        server = TemporaryAPI().begin(
            env={"PREFECT_HOME": scratch, DATABASE_URL: f"sqlite+aiosqlite:///{database}", **registering}, seed=False
        )
        try:
            server.wait(timeout=BUILD_TIMEOUT_S)
        finally:
            server.stop()
        check_new(database)
        sqlite_template.keep(database, destination)
    return destination


if __name__ == "__main__":
    sys.stdout.write(f"Prefect's empty database: {build_template()}\n")
